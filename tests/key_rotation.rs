//! Key rotation without a restart (`providers[].api_key_file`)
//! against the real binary: the file is replaced the two ways it is in
//! practice (an atomic rename, and Kubernetes' `..data` symlink swap of a
//! mounted Secret) while a long stream is in flight.

mod common;

use common::http::{anthropic_body, openai_body, Request};
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A key unique to this test run, so that finding it in a log means it
/// leaked from this test.
fn key(tag: &str) -> String {
    format!("sk-{tag}-{}-{}", std::process::id(), fastrand::u64(..))
}

fn long_stream() -> Behavior {
    Behavior {
        events: 20,
        event_delay_ms: 100,
        ..Behavior::default()
    }
}

async fn metric(px: &Proxy, sample: &str) -> Option<f64> {
    let text = common::http::send(px.admin, Request::get("/metrics"))
        .await
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

/// Wait until /metrics shows `sample` at `want`.
async fn wait_metric(px: &Proxy, sample: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = metric(px, sample).await;
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sample} is {got:?}, want {want}; log:\n{}",
            px.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The key headers the mock received, oldest first.
fn seen(m: &MockServer, header: &str) -> Vec<String> {
    m.recorded()
        .iter()
        .filter_map(|r| r.header(header).map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_renamed_key_file_reaches_the_next_request_not_the_stream_in_flight() {
    let (old_key, new_key) = (key("old"), key("new"));
    let dir = test_dir("keys-rename");
    let file = dir.join("anthropic");
    write_key_file(&file, &format!("{old_key}\n"));
    let m = mock(MockApi::Anthropic, "p1", long_stream()).await;
    let body = format!(
        "providers:\n{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [p1] }}\n",
        provider(
            "p1",
            "anthropic",
            m.addr(),
            &format!("    api_key_file: \"{}\"\n", file.display())
        )
    );
    let px = Proxy::builder("key-rename", &body).start().await;
    let reloads = "steadfast_provider_key_reloads_total{provider=\"p1\",result=\"success\"}";
    let failures = "steadfast_provider_key_reloads_total{provider=\"p1\",result=\"failure\"}";
    assert_eq!(metric(&px, reloads).await, Some(0.0));
    assert_eq!(metric(&px, failures).await, Some(0.0));

    // A long stream, in flight on the old key.
    let req = Request::post("/v1/messages", anthropic_body("m", true));
    let mut stream = common::http::open_stream(px.proxy, &req).await;
    assert_eq!(seen(&m, "x-api-key"), std::slice::from_ref(&old_key));

    write_key_file(&file, &format!("  {new_key}\n"));
    px.wait_event("provider_key_reloaded", |v| v["provider"] == "p1")
        .await;
    wait_metric(&px, reloads, 1.0).await;

    // The next request carries the new key...
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(seen(&m, "x-api-key"), [old_key.clone(), new_key.clone()]);
    // ...while the stream goes on to its end.
    let mut text = String::new();
    while let Some(chunk) = stream.next_chunk().await {
        if chunk.is_empty() {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("message_stop"), "stream cut: {text:?}");

    // An emptied file keeps the last good key, counted and said once.
    write_key_file(&file, "\n");
    let ev = px
        .wait_event("provider_key_rejected", |v| v["provider"] == "p1")
        .await;
    assert!(ev["reason"].as_str().unwrap().contains("is empty"), "{ev}");
    assert_eq!(ev["kept"], "previous key");
    wait_metric(&px, failures, 1.0).await;
    let r = px
        .send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(seen(&m, "x-api-key").last(), Some(&new_key));
    // Still empty a few checks later: no new failure.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(metric(&px, failures).await, Some(1.0));
    assert_eq!(px.events("provider_key_rejected").len(), 1);

    // A deleted file is another problem; then a good key again.
    std::fs::remove_file(&file).unwrap();
    let ev = px
        .wait_event("provider_key_rejected", |v| {
            v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("cannot be read"))
        })
        .await;
    assert_eq!(ev["provider"], "p1");
    wait_metric(&px, failures, 2.0).await;
    let newer = key("newer");
    write_key_file(&file, &newer);
    wait_metric(&px, reloads, 2.0).await;
    px.send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(seen(&m, "x-api-key").last(), Some(&newer));

    let logs = px.logs();
    for k in [&old_key, &new_key, &newer] {
        assert!(!logs.contains(k.as_str()), "a key is in the log");
    }
}

/// A Kubernetes Secret volume: `NAME -> ..data/NAME`, `..data -> ..<ts>`;
/// an update writes a new `..<ts>` directory and renames a new `..data`
/// symlink over the old one.
struct SecretVolume {
    dir: PathBuf,
    n: usize,
}

impl SecretVolume {
    fn new(dir: &Path, name: &str, value: &str) -> SecretVolume {
        let mut v = SecretVolume {
            dir: dir.to_path_buf(),
            n: 0,
        };
        v.update(name, value);
        std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        v
    }

    fn update(&mut self, name: &str, value: &str) {
        register_key_secret(value);
        self.n += 1;
        let ts = format!("..2026_01_01_00_00_0{}.000", self.n);
        std::fs::create_dir(self.dir.join(&ts)).unwrap();
        std::fs::write(self.dir.join(&ts).join(name), value).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&ts, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

#[tokio::test]
async fn a_kubernetes_secret_update_rotates_an_openai_key() {
    let (old_key, new_key) = (key("old"), key("new"));
    let dir = test_dir("keys-k8s");
    let mut volume = SecretVolume::new(&dir, "openai", &old_key);
    let m = mock(MockApi::OpenAi, "p1", long_stream()).await;
    let file = dir.join("openai");
    let body = format!(
        "providers:\n{}routes:\n  - {{ name: c, paths: [\"/v1/chat/completions\"], providers: [p1] }}\n",
        provider(
            "p1",
            "openai",
            m.addr(),
            &format!("    api_key_file: \"{}\"\n", file.display())
        )
    );
    let px = Proxy::builder("key-k8s", &body).start().await;
    let req = Request::post("/v1/chat/completions", openai_body("m", true));
    let mut stream = common::http::open_stream(px.proxy, &req).await;

    volume.update("openai", &format!("{new_key}\n"));
    px.wait_event("provider_key_reloaded", |_| true).await;
    wait_metric(
        &px,
        "steadfast_provider_key_reloads_total{provider=\"p1\",result=\"success\"}",
        1.0,
    )
    .await;
    let r = px
        .send(Request::post(
            "/v1/chat/completions",
            openai_body("m", false),
        ))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        seen(&m, "authorization"),
        [format!("Bearer {old_key}"), format!("Bearer {new_key}")]
    );
    let mut text = String::new();
    while let Some(chunk) = stream.next_chunk().await {
        if chunk.is_empty() {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("[DONE]"), "stream cut: {text:?}");
    // Two keys in one file (a bad paste): refused, the last good key kept.
    volume.update("openai", &format!("{new_key}\nsk-second-line-key\n"));
    let ev = px.wait_event("provider_key_rejected", |_| true).await;
    assert!(
        ev["reason"].as_str().unwrap().contains("line breaks"),
        "{ev}"
    );
    px.send(Request::post(
        "/v1/chat/completions",
        openai_body("m", false),
    ))
    .await;
    assert_eq!(
        seen(&m, "authorization").last(),
        Some(&format!("Bearer {new_key}"))
    );
}

#[tokio::test]
async fn a_config_reload_reads_the_key_file_too_and_a_broken_one_keeps_the_config() {
    let (old_key, new_key) = (key("old"), key("new"));
    let dir = test_dir("keys-reload");
    let file = dir.join("anthropic");
    write_key_file(&file, &old_key);
    let m = anthropic("p1").await;
    let body = |extra: &str| {
        format!(
            "{extra}providers:\n{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [p1] }}\n",
            provider(
                "p1",
                "anthropic",
                m.addr(),
                &format!("    api_key_file: \"{}\"\n", file.display())
            )
        )
    };
    let px = Proxy::builder("key-reload", &body("")).start().await;
    // The file emptied, then the config reloaded: rejected as a whole (an
    // unusable key is a config error), the old key keeps serving.
    write_key_file(&file, "");
    px.write_config(&body("retry: { max_attempts: 2 }\n"));
    px.signal("HUP");
    let ev = px.wait_event("config_rejected", |_| true).await;
    assert!(
        ev["errors"]
            .to_string()
            .contains("providers[0].api_key_file"),
        "{ev}"
    );
    px.send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(seen(&m, "x-api-key").last(), Some(&old_key));
    // A good key and a reload: in use at once.
    write_key_file(&file, &new_key);
    px.signal("HUP");
    px.wait_event("config_reloaded", |_| true).await;
    px.send(Request::post("/v1/messages", anthropic_body("m", false)))
        .await;
    assert_eq!(seen(&m, "x-api-key").last(), Some(&new_key));
}

#[test]
fn an_unusable_key_file_at_start_is_a_config_error() {
    let dir = test_dir("keys-start");
    let missing = dir.join("missing");
    let both = format!(
        "providers:\n  - {{ name: a, api: anthropic, base_url: \"http://127.0.0.1:1\", api_key_env: SOME_KEY, api_key_file: \"{0}\" }}\n  - {{ name: b, api: anthropic, base_url: \"http://127.0.0.1:1\", api_key_file: \"{0}\" }}\n  - {{ name: c, api: anthropic, base_url: \"http://127.0.0.1:1\", api_key_file: relative/key }}\nroutes:\n  - {{ name: r, paths: [\"/v1\"], providers: [a, b, c] }}\n",
        missing.display()
    );
    let cfg = dir.join("bad.yaml");
    std::fs::write(&cfg, both).unwrap();
    for cmd in ["check", "serve"] {
        let out = std::process::Command::new(bin())
            .arg(cmd)
            .arg("-c")
            .arg(&cfg)
            .env("SOME_KEY", "sk-some-key-value")
            .env_remove("STEADFAST_CONFIG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        for want in [
            "providers[0].api_key_file: set either api_key_env or api_key_file, not both",
            "providers[1].api_key_file: key file",
            "cannot be read",
            "providers[2].api_key_file: \"relative/key\" must be an absolute path",
        ] {
            assert!(err.contains(want), "{cmd}: missing {want:?} in\n{err}");
        }
    }
}

/// The harness fails any test whose proxy logged a key that went into a key
/// file (here: a "key" that is always logged, the test's own directory,
/// which the `started` line names with the config path).
#[tokio::test]
#[should_panic(expected = "of a key file appears in")]
async fn harness_fails_a_test_whose_logs_contain_a_key_file_key() {
    let m = anthropic("p1").await;
    let px = Proxy::builder(
        "key-harness-canary",
        &one_route("/v1/messages", "anthropic", m.addr()),
    )
    .start()
    .await;
    px.wait_event("started", |_| true).await;
    register_key_secret(px.dir.file_name().unwrap().to_str().unwrap());
}
