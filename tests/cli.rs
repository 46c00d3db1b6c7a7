//! The command line: check, version, bad input, healthcheck, demo.

mod common;

use common::*;
use std::process::Command;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args).env_remove("STEADFAST_CONFIG");
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run steadfast");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const DUMMY_KEYS: &[(&str, &str)] = &[
    ("ANTHROPIC_API_KEY", "dummy"),
    ("ANTHROPIC_BACKUP_API_KEY", "dummy"),
    ("OPENAI_API_KEY", "dummy"),
    ("BACKUP_OPENAI_API_KEY", "dummy"),
    ("GATEWAY_API_KEY", "dummy"),
    ("STEADFAST_CLIENT_TOKENS", "t1,t2"),
    ("STEADFAST_ADMIN_TOKEN", "dummy-admin-token-0123456789"),
];

/// A copy of a shipped config whose key files exist: each `api_key_file`
/// is pointed at a dummy key of the same name in a test directory, as the
/// environment gets dummy keys for `api_key_env`. `None` when it has none.
fn with_dummy_key_files(file: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut paths = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.trim().strip_prefix("api_key_file:") {
            let v = v.split('#').next().unwrap().trim().trim_matches('"');
            paths.push(v.to_string());
        }
    }
    if paths.is_empty() {
        return None;
    }
    let dir = test_dir("shipped-key-files");
    let mut out = text.clone();
    for p in paths {
        let name = std::path::Path::new(&p).file_name().unwrap();
        let dummy = dir.join(name);
        std::fs::write(&dummy, "dummy-key\n").unwrap();
        out = out.replace(&p, dummy.to_str().unwrap());
    }
    let copy = dir.join("config.yaml");
    std::fs::write(&copy, out).unwrap();
    Some(copy.to_str().unwrap().to_string())
}

#[test]
fn version_prints_the_crate_version() {
    let (code, out, _) = run(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
}

#[test]
fn shipped_configs_pass_check() {
    let mut files = vec!["conf/steadfast.yaml".to_string()];
    for e in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/examples")).unwrap() {
        files.push(format!(
            "conf/examples/{}",
            e.unwrap().file_name().to_string_lossy()
        ));
    }
    assert!(files.len() >= 4);
    let mut with_key_files = 0;
    for f in files {
        let path = format!("{}/{f}", env!("CARGO_MANIFEST_DIR"));
        let checked = with_dummy_key_files(&path).inspect(|_| with_key_files += 1);
        let (code, out, err) = run(
            &["check", "-c", checked.as_deref().unwrap_or(&f)],
            DUMMY_KEYS,
        );
        assert_eq!(code, 0, "{f}: {out}{err}");
    }
    assert!(with_key_files >= 1, "no shipped config shows api_key_file");
}

#[test]
fn cloud_providers_need_no_keys_and_their_mistakes_are_reported() {
    // Only the direct fallback's key: the clouds bring their own chains.
    let (code, out, err) = run(
        &["check", "-c", "conf/examples/anthropic-bedrock-vertex.yaml"],
        &[("ANTHROPIC_API_KEY", "dummy")],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok (3 providers, 1 routes)"), "{out}");
    let dir = test_dir("check-cloud");
    let path = dir.join("cloud.yaml");
    std::fs::write(
        &path,
        "providers:\n  - { name: b, api: anthropic, kind: bedrock, api_key_env: AWS_SECRET_ACCESS_KEY }\n  - { name: v, api: anthropic, kind: vertex, region: us-east5 }\nroutes:\n  - { name: r, paths: [\"/v1/messages\"], providers: [b, v] }\n",
    )
    .unwrap();
    let (code, _, err) = run(&["check", "-c", path.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{err}");
    for want in [
        "providers[0].api_key_env: not used with kind bedrock",
        "providers[0].region: is required for kind bedrock",
        "providers[1].project: is required for kind vertex",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn check_reports_every_error_with_its_path() {
    let dir = test_dir("check-errors");
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "listen: { proxy: \"nowhere\" }\nlimits: { max_inflight: 0, bogus: 1 }\nproviders:\n  - { name: a, api: anthropic, base_url: \"http://127.0.0.1:1\", api_key_env: NOT_SET_ANYWHERE }\nroutes:\n  - { name: r, paths: [\"/v1\"], providers: [a, ghost] }\n",
    )
    .unwrap();
    let (code, out, err) = run(&["check", "-c", path.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}{err}");
    // Unknown keys are reported first (they stop typed parsing).
    assert!(err.contains("limits.bogus: unknown key"), "{err}");
    std::fs::write(
        &path,
        "listen: { proxy: \"nowhere\" }\nlimits: { max_inflight: 0 }\nproviders:\n  - { name: a, api: anthropic, base_url: \"http://127.0.0.1:1\", api_key_env: NOT_SET_ANYWHERE }\nroutes:\n  - { name: r, paths: [\"/v1\"], providers: [a, ghost] }\n",
    )
    .unwrap();
    let (code, _, err) = run(&["check", "-c", path.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    for want in [
        "listen.proxy:",
        "limits.max_inflight: must be at least 1",
        "providers[0].api_key_env: environment variable NOT_SET_ANYWHERE is not set",
        "routes[0].providers[1]: unknown provider \"ghost\"",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn check_without_file_uses_builtin_default_outside_the_repo() {
    let dir = test_dir("check-default");
    let out = Command::new(bin())
        .arg("check")
        .current_dir(&dir)
        .env_remove("STEADFAST_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("built-in default"));
}

#[test]
fn missing_config_file_is_an_error() {
    let (code, _, err) = run(&["check", "-c", "/definitely/not/here.yaml"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read config file"), "{err}");
    let (code, _, _) = run(&["check"], &[("STEADFAST_CONFIG", "/nope.yaml")]);
    assert_eq!(code, 1, "STEADFAST_CONFIG must be honoured");
}

#[test]
fn bad_flags_fail_with_a_message() {
    let (code, _, err) = run(&["serve", "--no-such-flag"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("--no-such-flag"), "{err}");
    let (code, _, _) = run(&["frobnicate"], &[]);
    assert_ne!(code, 0);
}

#[test]
fn serve_with_invalid_config_exits_without_listening() {
    let dir = test_dir("serve-bad");
    let path = dir.join("bad.yaml");
    let port = free_port();
    std::fs::write(
        &path,
        format!("listen: {{ proxy: \"127.0.0.1:{port}\" }}\nproviders: []\n"),
    )
    .unwrap();
    let (code, _, err) = run(&["serve", "-c", path.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("providers: at least one provider is required"),
        "{err}"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test]
async fn healthcheck_follows_the_admin_status() {
    let m = anthropic("p1").await;
    let body = format!(
        "providers:\n{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], providers: [p1] }}\n",
        provider("p1", "anthropic", m.addr(), "")
    );
    let px = Proxy::builder("healthcheck", &body).start().await;
    let url = format!("http://{}/health", px.admin);
    let (code, _, err) = run(&["healthcheck", "--url", &url], &[]);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = run(
        &["healthcheck", "--url", &format!("http://{}/nope", px.admin)],
        &[],
    );
    assert_eq!(code, 1);
    let (code, _, err) = run(
        &[
            "healthcheck",
            "--url",
            &format!("http://{}/health", free_addr()),
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(!err.is_empty());
}

#[test]
fn demo_runs_and_succeeds() {
    let (code, out, err) = run(&["demo"], &[]);
    assert_eq!(code, 0, "demo failed:\n{out}\n{err}");
    assert!(out.contains("answered by backup"), "{out}");
    assert!(out.contains("every step behaved as described"), "{out}");
}
