//! Provider control (the admin API) against the real binary: disable
//! and enable, TTLs, who may do it, what routing, /health, /metrics and the
//! log say, what survives a reload, a restart and an upgrade, and the
//! `steadfast provider` command.

mod common;

use common::http::{anthropic_body, Request, Response};
use common::*;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

const TOKEN: &str = "admin-token-0123456789abcdef";

fn two_providers(a: SocketAddr, b: SocketAddr, extra: &str) -> String {
    format!(
        "{extra}providers:\n{}{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [p1, p2] }}\n",
        provider("p1", "anthropic", a, ""),
        provider("p2", "anthropic", b, "")
    )
}

fn call<'a>(method: &'a str, path: &'a str) -> Request<'a> {
    Request {
        method,
        path,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

async fn admin(px: &Proxy, req: Request<'_>) -> Response {
    common::http::send(px.admin, req).await
}

async fn post(px: &Proxy, path: &str) -> Response {
    admin(px, call("POST", path)).await
}

async fn health(px: &Proxy) -> serde_json::Value {
    admin(px, Request::get("/health")).await.json()
}

fn provider_entry(doc: &serde_json::Value, name: &str) -> serde_json::Value {
    doc["providers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no provider {name} in {doc}"))
}

/// The value of one sample of /metrics, by its exact name and labels.
async fn metric(px: &Proxy, sample: &str) -> Option<f64> {
    let text = admin(px, Request::get("/metrics")).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

async fn ask(px: &Proxy) -> Response {
    px.send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await
}

#[tokio::test]
async fn a_disabled_provider_is_skipped_and_shown_until_enabled() {
    let (m1, m2) = (anthropic("p1").await, anthropic("p2").await);
    let px = Proxy::builder("control-basic", &two_providers(m1.addr(), m2.addr(), ""))
        .start()
        .await;
    assert_eq!(ask(&px).await.header("x-steadfast-provider"), Some("p1"));

    let r = post(&px, "/providers/p1/disable").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["changed"], true);
    assert_eq!(v["provider"]["state"], "disabled");
    assert_eq!(v["provider"]["disabled_until"], serde_json::Value::Null);

    // Skipped: p2 answers in one attempt, p1 sees nothing.
    let before = m1.requests();
    for _ in 0..3 {
        let r = ask(&px).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
        assert_eq!(r.header("x-steadfast-attempts"), Some("1"));
    }
    assert_eq!(m1.requests(), before, "a disabled provider got traffic");

    // Shown in /health (degraded, not unhealthy: p2 is left), /providers
    // and the metrics.
    let h = health(&px).await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(provider_entry(&h, "p1")["state"], "disabled", "{h}");
    assert_eq!(provider_entry(&h, "p2")["state"], "healthy", "{h}");
    let list = admin(&px, Request::get("/providers")).await;
    assert_eq!(list.status, 200);
    let p1 = provider_entry(&list.json(), "p1");
    assert_eq!(p1["disabled"], true, "{p1}");
    assert_eq!(p1["routes"], serde_json::json!(["m"]), "{p1}");
    assert!(p1["disabled_since"].as_str().is_some(), "{p1}");
    let one = admin(&px, Request::get("/providers/p2")).await.json();
    assert_eq!(one["state"], "healthy", "{one}");
    assert_eq!(
        metric(&px, "steadfast_provider_disabled{provider=\"p1\"}").await,
        Some(1.0)
    );
    assert_eq!(
        metric(&px, "steadfast_provider_disabled{provider=\"p2\"}").await,
        Some(0.0)
    );
    assert_eq!(
        metric(
            &px,
            "steadfast_provider_state{provider=\"p1\",state=\"disabled\"}"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        metric(
            &px,
            "steadfast_provider_state{provider=\"p1\",state=\"healthy\"}"
        )
        .await,
        Some(0.0)
    );

    // The audit line: who (the peer, no token) and what.
    let ev = px.wait_event("provider_disabled", |_| true).await;
    assert_eq!(ev["provider"], "p1");
    assert_eq!(ev["ttl_ms"], serde_json::Value::Null);
    assert_eq!(ev["until"], serde_json::Value::Null);
    assert_eq!(ev["token"], false);
    assert_eq!(ev["via"], "admin_api");
    let peer: SocketAddr = ev["peer"].as_str().unwrap().parse().unwrap();
    assert!(peer.ip().is_loopback(), "{ev}");

    let r = post(&px, "/providers/p1/enable").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["changed"], true);
    assert_eq!(r.json()["provider"]["state"], "healthy");
    assert_eq!(ask(&px).await.header("x-steadfast-provider"), Some("p1"));
    assert_eq!(health(&px).await["status"], "healthy");
    assert_eq!(
        metric(&px, "steadfast_provider_disabled{provider=\"p1\"}").await,
        Some(0.0)
    );
    let ev = px.wait_event("provider_enabled", |_| true).await;
    assert_eq!(
        (ev["provider"].as_str(), ev["was_disabled"].as_bool()),
        (Some("p1"), Some(true))
    );
    // Enabling again changes nothing, and says so.
    let r = post(&px, "/providers/p1/enable").await;
    assert_eq!(
        (r.status, r.json()["changed"].as_bool()),
        (200, Some(false))
    );
}

#[tokio::test]
async fn a_disabled_provider_is_never_a_last_resort() {
    // p1 refuses connections; p2 is disabled. An ejected p2 would be tried
    // as a last resort; a disabled one must not be.
    let dead = free_addr();
    let m2 = anthropic("p2").await;
    let px = Proxy::builder("control-last-resort", &two_providers(dead, m2.addr(), ""))
        .start()
        .await;
    assert_eq!(post(&px, "/providers/p2/disable").await.status, 200);
    let r = ask(&px).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("x-steadfast-attempts"), Some("1"));
    assert_eq!(
        m2.requests(),
        0,
        "the disabled provider was used as a last resort"
    );

    // Every provider of the route disabled: nothing is contacted, the
    // client is told why, /health is unhealthy.
    assert_eq!(post(&px, "/providers/p1/disable").await.status, 200);
    let r = ask(&px).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("x-steadfast-attempts"), Some("0"));
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("disabled"), "{msg}");
    let h = admin(&px, Request::get("/health")).await;
    assert_eq!(h.status, 503);
    assert_eq!(h.json()["status"], "unhealthy");
    assert_eq!(m2.requests(), 0);
}

#[tokio::test]
async fn a_ttl_ends_the_disable_by_itself() {
    let (m1, m2) = (anthropic("p1").await, anthropic("p2").await);
    let px = Proxy::builder("control-ttl", &two_providers(m1.addr(), m2.addr(), ""))
        .start()
        .await;
    let t0 = Instant::now();
    // Long enough for the checks below on a busy machine.
    let r = post(&px, "/providers/p1/disable?ttl_ms=3000").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let until = r.json()["provider"]["disabled_until"]
        .as_str()
        .expect("an end time")
        .to_string();
    let ev = px.wait_event("provider_disabled", |_| true).await;
    assert_eq!(ev["ttl_ms"], 3000);
    assert_eq!(ev["until"].as_str(), Some(until.as_str()));
    assert_eq!(
        provider_entry(&health(&px).await, "p1")["disabled_until"].as_str(),
        Some(until.as_str())
    );
    assert_eq!(ask(&px).await.header("x-steadfast-provider"), Some("p2"));
    // Nobody calls enable: the TTL ends it, and the log says so.
    let ev = px
        .wait_event("provider_enabled", |v| v["via"] == "ttl_expired")
        .await;
    assert_eq!(ev["provider"], "p1");
    assert_eq!(ev["ttl_ms"], 3000);
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(2900), "ended after {took:?}");
    assert_eq!(ask(&px).await.header("x-steadfast-provider"), Some("p1"));
    assert_eq!(provider_entry(&health(&px).await, "p1")["state"], "healthy");
    // A second disable replaces the first one's TTL.
    post(&px, "/providers/p1/disable?ttl_ms=600000").await;
    let r = post(&px, "/providers/p1/disable").await;
    assert_eq!(
        r.json()["provider"]["disabled_until"],
        serde_json::Value::Null
    );
}

#[tokio::test]
async fn bad_admin_calls_get_clear_answers() {
    let (m1, m2) = (anthropic("p1").await, anthropic("p2").await);
    let px = Proxy::builder("control-bad", &two_providers(m1.addr(), m2.addr(), ""))
        .start()
        .await;
    let r = admin(&px, Request::get("/providers/p1/disable")).await;
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    assert!(r.json()["error"].as_str().unwrap().contains("POST"));
    let r = post(&px, "/providers").await;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    for m in ["DELETE", "PUT", "PATCH"] {
        let r = admin(&px, call(m, "/providers/p1/disable")).await;
        assert_eq!(r.status, 405, "{m}");
        let r = admin(&px, call(m, "/health")).await;
        assert_eq!(r.status, 405, "{m} /health");
    }
    let r = post(&px, "/providers/nope/disable").await;
    assert_eq!(r.status, 404);
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(msg.contains("\"nope\"") && msg.contains("p1, p2"), "{msg}");
    assert_eq!(post(&px, "/providers/p1/frobnicate").await.status, 404);
    for q in [
        "ttl_ms=0",
        "ttl_ms=abc",
        "ttl_ms=-1",
        "ttl=3600000",
        "ttl_ms=1&ttl_ms=2",
    ] {
        let r = post(&px, &format!("/providers/p1/disable?{q}")).await;
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert!(r.json()["error"].as_str().is_some(), "{q}");
    }
    assert_eq!(post(&px, "/providers/p1/enable?ttl_ms=5").await.status, 400);
    // None of that changed anything.
    assert_eq!(provider_entry(&health(&px).await, "p1")["state"], "healthy");
    assert!(px.events("provider_disabled").is_empty());
    // The old endpoints still answer GET.
    assert_eq!(admin(&px, Request::get("/live")).await.status, 200);
}

#[tokio::test]
async fn with_a_token_state_changes_need_it_even_from_loopback() {
    let (m1, m2) = (anthropic("p1").await, anthropic("p2").await);
    let body = two_providers(
        m1.addr(),
        m2.addr(),
        "admin: { token_env: STEADFAST_ADMIN_TOKEN }\n",
    );
    let px = Proxy::builder("control-token", &body)
        .env("STEADFAST_ADMIN_TOKEN", TOKEN)
        .start()
        .await;
    let r = post(&px, "/providers/p1/disable").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"steadfast-admin\"")
    );
    for wrong in [
        "Bearer admin-token-0123456789abcdeX",
        "Bearer admin-token",
        "Basic YWRtaW46YWRtaW4=",
        TOKEN,
    ] {
        let r = admin(
            &px,
            call("POST", "/providers/p1/disable").header("authorization", wrong),
        )
        .await;
        assert_eq!(r.status, 401, "{wrong}");
    }
    let denied = px.wait_event("admin_denied", |_| true).await;
    assert_eq!(denied["status"], 401);
    assert_eq!(provider_entry(&health(&px).await, "p1")["state"], "healthy");
    // Reads stay open.
    assert_eq!(admin(&px, Request::get("/providers")).await.status, 200);
    let r = admin(
        &px,
        call("POST", "/providers/p1/disable?ttl_ms=60000")
            .header("authorization", format!("bearer {TOKEN}")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ev = px.wait_event("provider_disabled", |_| true).await;
    assert_eq!(ev["token"], true);
    assert_eq!(ev["ttl_ms"], 60000);
    // The harness checks on drop that the token never reached the log.
}

/// A local address other than loopback that this machine's admin listener
/// can be reached on, if it has one.
fn non_loopback_ip() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connecting a UDP socket only picks a route.
    s.connect("192.0.2.255:9")
        .or_else(|_| s.connect("10.255.255.255:9"))
        .ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn without_a_token_only_loopback_may_change_state() {
    let Some(ip) = non_loopback_ip() else {
        eprintln!("no non-loopback address on this machine: only the unit test covers this");
        return;
    };
    let (m1, m2) = (anthropic("p1").await, anthropic("p2").await);
    let px = Proxy::builder("control-remote", &two_providers(m1.addr(), m2.addr(), ""))
        .admin_ip("0.0.0.0")
        .start()
        .await;
    let remote = SocketAddr::new(ip, px.admin.port());
    let r = common::http::send(remote, call("POST", "/providers/p1/disable")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("admin.token_env"));
    // A bearer does not help when no token is configured.
    let r = common::http::send(
        remote,
        call("POST", "/providers/p1/disable").header("authorization", format!("Bearer {TOKEN}")),
    )
    .await;
    assert_eq!(r.status, 403);
    // Reads are fine from anywhere, like /health.
    let r = common::http::send(remote, Request::get("/providers")).await;
    assert_eq!(r.status, 200);
    assert_eq!(provider_entry(&r.json(), "p1")["state"], "healthy");
    let ev = px.wait_event("admin_denied", |_| true).await;
    assert_eq!(ev["status"], 403);
    assert!(
        ev["peer"].as_str().unwrap().starts_with(&ip.to_string()),
        "{ev}"
    );
    // Loopback may.
    assert_eq!(post(&px, "/providers/p1/disable").await.status, 200);
}

#[tokio::test]
async fn a_disable_survives_reload_and_upgrade() {
    let (m1, m2, m3) = (
        anthropic("p1").await,
        anthropic("p2").await,
        anthropic("p3").await,
    );
    let body = |extra: &str| {
        format!(
            "{extra}providers:\n{}{}{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [p1, p2, p3] }}\n",
            provider("p1", "anthropic", m1.addr(), ""),
            provider("p2", "anthropic", m2.addr(), ""),
            provider("p3", "anthropic", m3.addr(), "")
        )
    };
    let mut old = Proxy::builder("control-upgrade", &body("")).start().await;
    assert_eq!(post(&old, "/providers/p1/disable").await.status, 200);
    let r = post(&old, "/providers/p2/disable?ttl_ms=600000").await;
    let p2_until = r.json()["provider"]["disabled_until"]
        .as_str()
        .unwrap()
        .to_string();
    let state = old.dir.join("steadfast.state.json");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).expect("state file")).unwrap();
    assert_eq!(saved["disabled"].as_array().unwrap().len(), 2, "{saved}");

    // A reload keeps it.
    old.write_config(&body("retry: { max_attempts: 2 }\n"));
    old.signal("HUP");
    old.wait_event("config_reloaded", |_| true).await;
    assert_eq!(ask(&old).await.header("x-steadfast-provider"), Some("p3"));
    assert_eq!(
        provider_entry(&health(&old).await, "p1")["state"],
        "disabled"
    );

    // So does an upgrade: the new process reads the state file.
    let new = old.spawn_upgrade();
    tokio::time::sleep(Duration::from_millis(300)).await;
    old.signal("QUIT");
    new.wait_event("started", |_| true).await;
    old.wait_exit(Duration::from_secs(30))
        .await
        .expect("old process did not exit");
    new.wait_ready().await;
    let restored = new
        .wait_event("provider_disabled", |v| v["provider"] == "p2")
        .await;
    assert_eq!(restored["via"], "state_file");
    let h = health(&new).await;
    assert_eq!(provider_entry(&h, "p1")["state"], "disabled", "{h}");
    assert_eq!(
        provider_entry(&h, "p1")["disabled_until"],
        serde_json::Value::Null
    );
    assert_eq!(provider_entry(&h, "p2")["state"], "disabled", "{h}");
    // The same end, to the clock's rounding.
    let got = provider_entry(&h, "p2")["disabled_until"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(got[..19], p2_until[..19], "{got} vs {p2_until}");
    let before = (m1.requests(), m2.requests());
    let r = ask(&new).await;
    assert_eq!(r.header("x-steadfast-provider"), Some("p3"));
    assert_eq!((m1.requests(), m2.requests()), before);
    // And the new process can enable it.
    assert_eq!(post(&new, "/providers/p1/enable").await.status, 200);
    assert_eq!(ask(&new).await.header("x-steadfast-provider"), Some("p1"));
}

#[tokio::test]
async fn a_restart_keeps_live_disables_and_drops_the_rest() {
    let (m1, m2) = (anthropic("p1").await, anthropic("p2").await);
    let state = serde_json::json!({"version": 1, "disabled": [
        {"provider": "p1", "since": "2020-01-01T00:00:00.000Z", "until": "2020-01-01T01:00:00.000Z"},
        {"provider": "p2", "since": "2020-01-01T00:00:00.000Z", "until": null},
        {"provider": "gone", "since": "2020-01-01T00:00:00.000Z", "until": null},
    ]});
    let px = Proxy::builder("control-restart", &two_providers(m1.addr(), m2.addr(), ""))
        .file("steadfast.state.json", &state.to_string())
        .start()
        .await;
    let h = health(&px).await;
    assert_eq!(provider_entry(&h, "p1")["state"], "healthy", "expired: {h}");
    assert_eq!(provider_entry(&h, "p2")["state"], "disabled", "{h}");
    let ev = px.wait_event("state_file_entry_ignored", |_| true).await;
    assert_eq!(ev["provider"], "gone");
    // Rewritten with only what still holds.
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(px.dir.join("steadfast.state.json")).unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = saved["disabled"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["provider"].as_str())
        .collect();
    assert_eq!(names, ["p2"], "{saved}");
}

#[tokio::test]
async fn a_corrupt_state_file_is_logged_and_ignored() {
    let (m1, m2) = (anthropic("p1").await, anthropic("p2").await);
    let px = Proxy::builder("control-corrupt", &two_providers(m1.addr(), m2.addr(), ""))
        .file("steadfast.state.json", "{\"version\":1,\"disabled\":[{")
        .start()
        .await;
    let ev = px.wait_event("state_file_ignored", |_| true).await;
    assert!(
        ev["error"]
            .as_str()
            .unwrap()
            .contains("not a steadfast state file"),
        "{ev}"
    );
    assert_eq!(health(&px).await["status"], "healthy");
    assert_eq!(ask(&px).await.status, 200);
}

fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.arg("provider")
        .args(args)
        .env_remove("STEADFAST_CONFIG");
    cmd.env_remove("STEADFAST_ADMIN_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run steadfast provider");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_provider_command_drives_the_api() {
    let (m1, m2) = (anthropic("p1").await, anthropic("p2").await);
    let body = two_providers(
        m1.addr(),
        m2.addr(),
        "admin: { token_env: STEADFAST_ADMIN_TOKEN }\n",
    );
    let px = Proxy::builder("control-cli", &body)
        .env("STEADFAST_ADMIN_TOKEN", TOKEN)
        .start()
        .await;
    let cfg = px.config_path.to_str().unwrap().to_string();
    let with_token = [("STEADFAST_ADMIN_TOKEN", TOKEN)];
    // The command talks to the proxy's admin listener only, never to the
    // mocks this runtime serves, so running it blocking is fine.
    let run = |args: Vec<String>, env: &[(&str, &str)]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&args, env)
    };
    let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let (code, out, err) = run(
        a(&["disable", "p1", "--ttl", "1h", "-c", &cfg]),
        &with_token,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("p1: disabled until 20"), "{out}");
    assert!(out.trim_end().ends_with("(1h)"), "{out}");
    let ev = px.wait_event("provider_disabled", |_| true).await;
    assert_eq!(
        (ev["ttl_ms"].as_u64(), ev["token"].as_bool()),
        (Some(3_600_000), Some(true))
    );
    assert_eq!(ask(&px).await.header("x-steadfast-provider"), Some("p2"));

    // list needs no token, and reads the address from the config.
    let (code, out, err) = run(a(&["list", "-c", &cfg]), &[]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{out}");
    assert!(
        lines[1].starts_with("p1") && lines[1].contains("disabled"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("p2") && lines[2].contains("healthy"),
        "{out}"
    );
    let (code, out, _) = run(
        a(&["list", "--json", "--admin", &format!("http://{}", px.admin)]),
        &[],
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(provider_entry(&v, "p1")["state"], "disabled");

    let (code, out, err) = run(a(&["enable", "p1", "-c", &cfg]), &with_token);
    assert_eq!((code, out.trim()), (0, "p1: enabled"), "{err}");
    let (code, out, _) = run(a(&["enable", "p1", "-c", &cfg]), &with_token);
    assert_eq!(
        (code, out.trim()),
        (0, "p1: was not disabled; nothing changed")
    );
    assert_eq!(ask(&px).await.header("x-steadfast-provider"), Some("p1"));

    // Failures: clear, with exit codes.
    let (code, _, err) = run(a(&["disable", "nope", "-c", &cfg]), &with_token);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("404") && err.contains("unknown provider \"nope\""),
        "{err}"
    );
    let (code, _, err) = run(a(&["disable", "p1", "-c", &cfg]), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("$STEADFAST_ADMIN_TOKEN"), "{err}");
    let (code, _, err) = run(
        a(&["disable", "p1", "-c", &cfg]),
        &[("STEADFAST_ADMIN_TOKEN", "not-the-admin-token-at-all")],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("401") && err.contains("wrong admin token"),
        "{err}"
    );
    let (code, _, err) = run(
        a(&["disable", "p1", "--ttl", "60", "-c", &cfg]),
        &with_token,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("with a unit"), "{err}");
    let (code, _, err) = run(
        a(&["disable", "p1", "--admin", &free_addr().to_string()]),
        &with_token,
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot reach the admin listener"), "{err}");
    let (code, _, _) = run(a(&["disable", "P 1", "-c", &cfg]), &with_token);
    assert_eq!(code, 2);
    assert_eq!(provider_entry(&health(&px).await, "p1")["state"], "healthy");
}
