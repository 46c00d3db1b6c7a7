//! Bedrock and Vertex end to end: the real binary serving Claude-Code-shaped
//! requests through routes of Anthropic, Bedrock and Vertex providers, with
//! the fake clouds of `common::clouds` (a Bedrock that verifies SigV4 on
//! its own, a Vertex that checks Google tokens issued by a fake token
//! endpoint) and credentials from each cloud's standard chain, set up
//! through the process environment as a pod's would be.

mod common;

use common::clouds::*;
use common::http::Request;
use common::{mock, status, test_dir, MockApi, Proxy, ProxyBuilder};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const MODEL: &str = "claude-sonnet-4-5";
const BEDROCK_MODEL: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";
const VERTEX_MODEL: &str = "claude-sonnet-4-5@20250929";
const AWS_ID: &str = "ASIAE2ETEST00001";
const AWS_SECRET: &str = "e2e-secret-access-key-0001";
const AWS_TOKEN: &str = "e2e-session-token-0001";
const CLIENT_KEY: &str = "sk-ant-client-key-e2e-000000";
const BETAS: &str = "claude-code-20250219,interleaved-thinking-2025-05-14,context-1m-2025-08-07,fine-grained-tool-streaming-2025-05-14";

/// Every variable of AWS's and Google's credential chains: a test's
/// process starts with none of them, then gets what it sets.
const CHAIN_VARS: [&str; 13] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "GOOGLE_APPLICATION_CREDENTIALS",
];

/// The two fake clouds and the Google token endpoint behind Vertex.
struct Clouds {
    bedrock: FakeBedrock,
    vertex: FakeVertex,
    tokens: FakeGoogleToken,
    service_account: PathBuf,
}

impl Clouds {
    async fn start(name: &str) -> Clouds {
        let key = AwsKey::new(AWS_ID, AWS_SECRET, Some(AWS_TOKEN));
        let bedrock = FakeBedrock::start("us-east-1", vec![key]).await;
        let tokens = FakeGoogleToken::start().await;
        let vertex = FakeVertex::start("fake-project", "europe-west1", &tokens).await;
        let service_account = tokens.write_service_account(&test_dir(name));
        Clouds {
            bedrock,
            vertex,
            tokens,
            service_account,
        }
    }

    /// The provider entries for both clouds.
    fn providers(&self) -> String {
        format!(
            r#"  - name: bedrock
    api: anthropic
    kind: bedrock
    region: us-east-1
    base_url: "{}"
    models: {{ "{MODEL}": "{BEDROCK_MODEL}" }}
    anthropic_beta: {{ deny: ["context-1m-2025-08-07"] }}
  - name: vertex
    api: anthropic
    kind: vertex
    region: europe-west1
    project: fake-project
    base_url: "{}"
    models: {{ "{MODEL}": "{VERTEX_MODEL}" }}
"#,
            self.bedrock.base_url(),
            self.vertex.base_url()
        )
    }

    /// A proxy whose environment holds AWS keys and the service account,
    /// and nothing else either chain could find.
    fn proxy(&self, name: &str, body: &str) -> ProxyBuilder {
        bare_chains(Proxy::builder(name, body))
            .env("AWS_ACCESS_KEY_ID", AWS_ID)
            .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
            .env("AWS_SESSION_TOKEN", AWS_TOKEN)
            .env(
                "GOOGLE_APPLICATION_CREDENTIALS",
                self.service_account.to_str().unwrap(),
            )
    }
}

/// No credentials anywhere: no variables, no profile files, no instance
/// metadata.
fn bare_chains(mut b: ProxyBuilder) -> ProxyBuilder {
    for v in CHAIN_VARS {
        b = b.env_remove(v);
    }
    b.env("AWS_CONFIG_FILE", "/nonexistent/steadfast-test/config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/steadfast-test/credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

async fn health(p: &Proxy) -> serde_json::Value {
    common::http::send(p.admin, Request::get("/health"))
        .await
        .json()
}

fn provider_health<'a>(h: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    h["providers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no provider {name} in {h}"))
}

/// Wait until `/health` says `pred` of provider `name`.
async fn wait_provider(
    p: &Proxy,
    name: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h = health(p).await;
        if pred(provider_health(&h, name)) {
            return h;
        }
        if Instant::now() > deadline {
            panic!("{name} never matched in /health: {h}\n{}", p.logs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn credentials_ready(p: &Proxy, names: &[&str]) {
    for name in names {
        wait_provider(p, name, |v| v["credentials"] == "ready").await;
    }
}

/// What Claude Code sends for one turn: `?beta=true`, its beta flags, a
/// system prompt with cache control, tools, extended thinking, and a
/// prompt of `prompt_bytes`.
fn claude_code_request(path: &str, stream: bool, prompt_bytes: usize) -> Request<'_> {
    let body = serde_json::json!({
        "model": MODEL,
        "max_tokens": 32000,
        "stream": stream,
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
            {"type": "text", "text": "Use the tools to answer.", "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "x".repeat(prompt_bytes)},
                {"type": "text", "text": "What does this repository do?", "cache_control": {"type": "ephemeral"}}
            ]}
        ],
        "tools": [{
            "name": "Bash",
            "description": "Run a shell command",
            "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}
        }],
        "thinking": {"type": "enabled", "budget_tokens": 16000},
        "metadata": {"user_id": "user_0123_account__session_e2e"}
    });
    Request::post(path, body.to_string())
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", BETAS)
        .header("x-api-key", CLIENT_KEY)
        .header("anthropic-dangerous-direct-browser-access", "true")
        .header("x-app", "cli")
        .header("user-agent", "claude-cli/2.0.0 (external, cli)")
        .header("x-amz-date", "20200101T000000Z")
        .header("x-goog-user-project", "someone-elses-project")
}

/// The SSE an Anthropic client gets for `events` (JSON strings).
fn sse_of(events: &[String]) -> String {
    events
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(e).unwrap();
            format!("event: {}\ndata: {e}\n\n", v["type"].as_str().unwrap())
        })
        .collect()
}

fn text_of(r: &common::http::Response) -> String {
    r.events()
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_string))
        .collect()
}

/// The access log line of the request `r` answered (written just after
/// the answer went).
async fn request_log(p: &Proxy, r: &common::http::Response) -> serde_json::Value {
    let id = r.header("x-request-id").expect("x-request-id").to_string();
    p.wait_event("request", |e| e["request_id"] == id.as_str())
        .await
}

fn chain_of(log: &serde_json::Value) -> Vec<(String, String)> {
    log["attempt_chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["provider"].as_str().unwrap().to_string(),
                a["result"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn a_claude_code_turn_fails_over_from_anthropic_through_bedrock_to_vertex() {
    let clouds = Clouds::start("cc-chain").await;
    let anthropic = mock(MockApi::Anthropic, "anthropic", status(529)).await;
    let body = format!(
        "providers:\n  - {{ name: anthropic, api: anthropic, base_url: \"http://{}\" }}\n{}routes:\n  - {{ name: messages, paths: [\"/v1/messages\"], strategy: priority, providers: [anthropic, bedrock, vertex] }}\nhealth:\n  eject_after_failures: 100\n  base_ejection_ms: 1\n",
        anthropic.addr(),
        clouds.providers()
    );
    let p = clouds.proxy("cc-chain", &body).start().await;
    credentials_ready(&p, &["bedrock", "vertex"]).await;

    for stream in [true, false] {
        clouds.bedrock.push(BedrockMode::Throttle);
        let before_b = clouds.bedrock.requests().len();
        let before_v = clouds.vertex.requests().len();
        let r = p
            .send(claude_code_request(
                "/v1/messages?beta=true",
                stream,
                1 << 20,
            ))
            .await;
        assert_eq!(r.status, 200, "{}\n{}", r.text(), p.logs());
        assert_eq!(r.header("x-steadfast-provider"), Some("vertex"));
        assert_eq!(r.header("x-steadfast-attempts"), Some("3"));
        if stream {
            assert_eq!(r.header("content-type"), Some("text/event-stream"));
            assert_eq!(text_of(&r), VERTEX_TEXT);
            assert_eq!(
                r.events().last().and_then(|e| e.0.clone()).as_deref(),
                Some("message_stop")
            );
        } else {
            assert_eq!(r.json()["content"][0]["text"], VERTEX_TEXT);
        }
        assert_eq!(
            chain_of(&request_log(&p, &r).await),
            pairs(&[
                ("anthropic", "server"),
                ("bedrock", "rate_limit"),
                ("vertex", "success")
            ])
        );

        // Bedrock: signed (the fake refuses anything else), the Bedrock
        // model in the path, no query, the body made Bedrock's.
        assert!(
            clouds.bedrock.rejections().is_empty(),
            "{:?}",
            clouds.bedrock.rejections()
        );
        let b = &clouds.bedrock.requests()[before_b];
        let op = if stream {
            "invoke-with-response-stream"
        } else {
            "invoke"
        };
        assert_eq!(
            b.target,
            format!("/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/{op}")
        );
        let bj = b.json();
        assert_eq!(bj["anthropic_version"], "bedrock-2023-05-31");
        assert!(bj.get("model").is_none() && bj.get("stream").is_none());
        assert_eq!(
            bj["anthropic_beta"],
            serde_json::json!([
                "claude-code-20250219",
                "interleaved-thinking-2025-05-14",
                "fine-grained-tool-streaming-2025-05-14"
            ]),
            "context-1m is denied on this provider"
        );
        assert_eq!(bj["tools"][0]["name"], "Bash");
        assert_eq!(bj["thinking"]["budget_tokens"], 16000);
        assert_eq!(
            bj["messages"][0]["content"][0]["text"]
                .as_str()
                .unwrap()
                .len(),
            1 << 20
        );
        assert_eq!(
            b.header("authorization")
                .map(|a| a.starts_with(&format!("AWS4-HMAC-SHA256 Credential={AWS_ID}/"))),
            Some(true)
        );
        assert_eq!(b.header("x-amz-security-token"), Some(AWS_TOKEN));
        for h in [
            "x-api-key",
            "anthropic-version",
            "anthropic-beta",
            "x-goog-user-project",
        ] {
            assert_eq!(b.header(h), None, "{h} reached bedrock");
        }
        assert_ne!(b.header("x-amz-date"), Some("20200101T000000Z"));

        // Vertex: the bearer token from the service account, the body
        // made Vertex's, every flag (none denied here) in it.
        assert!(clouds.vertex.rejections().is_empty());
        let v = &clouds.vertex.requests()[before_v];
        let method = if stream {
            "streamRawPredict"
        } else {
            "rawPredict"
        };
        assert_eq!(
            v.target,
            format!("/v1/projects/fake-project/locations/europe-west1/publishers/anthropic/models/{VERTEX_MODEL}:{method}")
        );
        assert!(v
            .header("authorization")
            .is_some_and(|a| a.starts_with("Bearer ya29.fake-")));
        for h in ["x-api-key", "x-goog-user-project", "anthropic-beta"] {
            assert_eq!(v.header(h), None, "{h} reached vertex");
        }
        let vj = v.json();
        assert_eq!(vj["anthropic_version"], "vertex-2023-10-16");
        assert_eq!(vj["stream"], stream);
        assert!(vj.get("model").is_none());
        assert_eq!(
            vj["anthropic_beta"].as_array().map(Vec::len),
            Some(4),
            "{}",
            vj["anthropic_beta"]
        );
        assert_eq!(
            vj["messages"][0]["content"][0]["text"]
                .as_str()
                .unwrap()
                .len(),
            1 << 20
        );
    }
    // The client's own key went to Anthropic only.
    assert!(anthropic
        .recorded()
        .iter()
        .all(|r| r.header("x-api-key") == Some(CLIENT_KEY)));
    assert!(!p.logs().contains(AWS_TOKEN) && !p.logs().contains("ya29.fake"));
}

#[tokio::test]
async fn a_bedrock_stream_reaches_the_client_as_anthropic_sse_with_its_usage_counted() {
    let clouds = Clouds::start("bedrock-sse").await;
    let body = format!(
        "providers:\n{}routes:\n  - {{ name: messages, paths: [\"/v1/messages\"], providers: [bedrock] }}\n",
        clouds.providers()
    );
    let p = clouds.proxy("bedrock-sse", &body).start().await;
    credentials_ready(&p, &["bedrock"]).await;

    let r = p
        .send(claude_code_request("/v1/messages?beta=true", true, 64))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("content-length"), None);
    assert!(r.complete);
    assert_eq!(
        r.text(),
        sse_of(&bedrock_stream_events(BEDROCK_MODEL, BEDROCK_TEXT)),
        "exactly the events Bedrock carried, as SSE"
    );
    assert_eq!(
        r.header("x-steadfast-upstream-request-id"),
        Some("fake-req-1")
    );

    let r = p.send(claude_code_request("/v1/messages", false, 64)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["content"][0]["text"], BEDROCK_TEXT);

    // 5 input and 4 output tokens per answer, stream and JSON alike;
    // counted just after the answer went.
    let want = [
        format!("steadfast_tokens_total{{kind=\"input\",model=\"{BEDROCK_MODEL}\",provider=\"bedrock\"}} 10"),
        format!("steadfast_tokens_total{{kind=\"output\",model=\"{BEDROCK_MODEL}\",provider=\"bedrock\"}} 8"),
        "steadfast_upstream_attempts_total{class=\"success\",provider=\"bedrock\"} 2".to_string(),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = common::http::send(p.admin, Request::get("/metrics"))
            .await
            .text();
        if want.iter().all(|l| metrics.contains(l.as_str())) {
            break;
        }
        assert!(Instant::now() < deadline, "{want:?} not all in\n{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn bedrock_exceptions_fail_over_before_content_and_end_the_stream_after_it() {
    let clouds = Clouds::start("bedrock-exc").await;
    let body = format!(
        "providers:\n{}routes:\n  - {{ name: messages, paths: [\"/v1/messages\"], strategy: priority, providers: [bedrock, vertex] }}\nhealth:\n  eject_after_failures: 100\n  base_ejection_ms: 1\n",
        clouds.providers()
    );
    let p = clouds.proxy("bedrock-exc", &body).start().await;
    credentials_ready(&p, &["bedrock", "vertex"]).await;

    // After the first content: the client has Bedrock's text so far, then
    // the exception as Anthropic's error event of its class, and no end.
    clouds.bedrock.push(BedrockMode::ExceptionAfterContent(
        "modelStreamErrorException",
    ));
    let r = p.send(claude_code_request("/v1/messages", true, 64)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-steadfast-provider"), Some("bedrock"));
    let events = r.events();
    let (name, data) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("error"), "{}", r.text());
    let e: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(e["error"]["type"], "api_error");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("modelStreamErrorException"));
    assert!(!events
        .iter()
        .any(|(n, _)| n.as_deref() == Some("message_stop")));
    let cut = p
        .wait_event("stream_interrupted", |e| e["provider"] == "bedrock")
        .await;
    assert_eq!(cut["class"], "server");

    // Cut in the middle of a frame after content: a broken connection.
    clouds.bedrock.push(BedrockMode::CutMidStream);
    let r = p.send(claude_code_request("/v1/messages", true, 64)).await;
    assert_eq!(r.header("x-steadfast-provider"), Some("bedrock"));
    let (name, data) = r.events().pop().unwrap();
    assert_eq!(name.as_deref(), Some("error"), "{}", r.text());
    assert!(data.contains("failed mid-stream"), "{data}");
    p.wait_event("stream_interrupted", |e| e["class"] == "network")
        .await;

    // Before any content: a failed attempt of the exception's class, and
    // the next provider answers.
    clouds
        .bedrock
        .push(BedrockMode::Exception("throttlingException"));
    let r = p.send(claude_code_request("/v1/messages", true, 64)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-steadfast-provider"), Some("vertex"));
    assert_eq!(text_of(&r), VERTEX_TEXT);
    assert_eq!(
        chain_of(&request_log(&p, &r).await),
        pairs(&[("bedrock", "rate_limit"), ("vertex", "success")])
    );
    assert!(!r.text().contains("throttlingException"));

    // A prompt too long for Bedrock's model is another model's chance.
    clouds.bedrock.push(BedrockMode::Error(
        400,
        "ValidationException",
        "Input is too long for requested model.",
    ));
    let r = p.send(claude_code_request("/v1/messages", false, 64)).await;
    assert_eq!(
        r.header("x-steadfast-provider"),
        Some("vertex"),
        "{}",
        r.text()
    );
    assert_eq!(
        chain_of(&request_log(&p, &r).await),
        pairs(&[("bedrock", "context_length"), ("vertex", "success")])
    );
}

#[tokio::test]
async fn bedrock_error_answers_become_anthropic_errors_of_their_class() {
    let clouds = Clouds::start("bedrock-err").await;
    let body = format!(
        "providers:\n{}routes:\n  - {{ name: only, paths: [\"/v1/messages\"], providers: [bedrock] }}\nhealth:\n  eject_after_failures: 100\n",
        clouds.providers()
    );
    let p = clouds.proxy("bedrock-err", &body).start().await;
    credentials_ready(&p, &["bedrock", "vertex"]).await;

    // On a route of its own, each error is the answer, in Anthropic's
    // shape and of the class its Bedrock type says.
    let cases = [
        (BedrockMode::Throttle, 429, "rate_limit_error", "rate_limit"),
        (
            BedrockMode::Error(
                400,
                "ServiceQuotaExceededException",
                "Too many tokens per day",
            ),
            429,
            "rate_limit_error",
            "rate_limit",
        ),
        (
            BedrockMode::Error(429, "ModelNotReadyException", "Model is not ready"),
            529,
            "overloaded_error",
            "server",
        ),
        (
            BedrockMode::Error(400, "ValidationException", "messages.0.content: bad"),
            400,
            "invalid_request_error",
            "request",
        ),
        (
            BedrockMode::Error(403, "AccessDeniedException", "not authorized to invoke"),
            403,
            "permission_error",
            "auth",
        ),
        (
            BedrockMode::ExpiredToken,
            401,
            "authentication_error",
            "auth",
        ),
    ];
    for (mode, status, ty, class) in cases {
        clouds.bedrock.push(mode.clone());

        let r = p.send(claude_code_request("/v1/messages", true, 64)).await;
        assert_eq!(r.status, status, "{mode:?}: {}", r.text());
        assert_eq!(r.header("x-steadfast-error-class"), Some(class), "{mode:?}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v = r.json();
        assert_eq!(v["type"], "error", "{mode:?}");
        assert_eq!(v["error"]["type"], ty, "{mode:?}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("bedrock "),
            "{v}"
        );
    }
}

#[tokio::test]
async fn paths_a_cloud_does_not_serve_skip_it_or_are_not_found() {
    let clouds = Clouds::start("cloud-paths").await;
    let anthropic = common::anthropic("anthropic").await;
    let body = format!(
        "providers:\n  - {{ name: anthropic, api: anthropic, base_url: \"http://{}\" }}\n{}routes:\n  - {{ name: models, paths: [\"/v1/models\"], providers: [bedrock, vertex] }}\n  - {{ name: messages, paths: [\"/v1/messages\"], strategy: priority, providers: [bedrock, vertex, anthropic] }}\n",
        anthropic.addr(),
        clouds.providers()
    );
    let p = clouds.proxy("cloud-paths", &body).start().await;
    credentials_ready(&p, &["bedrock", "vertex"]).await;

    let count =
        serde_json::json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]});
    let r = p
        .send(
            Request::post("/v1/messages/count_tokens?beta=true", count.to_string())
                .header("anthropic-version", "2023-06-01"),
        )
        .await;
    // (The mock has no token counting: its 404 is the answer.)
    assert_eq!(
        r.header("x-steadfast-provider"),
        Some("anthropic"),
        "{}",
        r.text()
    );
    assert_eq!(r.header("x-steadfast-attempts"), Some("1"));
    assert_eq!(
        anthropic
            .recorded()
            .last()
            .map(|r| r.path.clone())
            .as_deref(),
        Some("/v1/messages/count_tokens?beta=true")
    );
    let skipped: Vec<_> = p
        .events("provider_skipped")
        .into_iter()
        .map(|e| e["provider"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(skipped, ["bedrock", "vertex"]);

    let r = p.send(Request::get("/v1/models")).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "not_found_error");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("GET /v1/models") && msg.contains("POST /v1/messages only"),
        "{msg}"
    );
    assert_eq!(r.header("x-steadfast-attempts"), Some("0"));
    assert!(clouds.bedrock.requests().is_empty());
    assert!(clouds.vertex.requests().is_empty());
}

#[tokio::test]
async fn missing_aws_credentials_are_reported_and_fail_the_attempt_as_auth() {
    let clouds = Clouds::start("no-aws").await;
    let body = format!(
        "providers:\n{}routes:\n  - {{ name: messages, paths: [\"/v1/messages\"], strategy: priority, providers: [bedrock, vertex] }}\n",
        clouds.providers()
    );
    // Google's service account only: the AWS chain finds nothing.
    let p = bare_chains(Proxy::builder("no-aws", &body))
        .env(
            "GOOGLE_APPLICATION_CREDENTIALS",
            clouds.service_account.to_str().unwrap(),
        )
        .start()
        .await;
    credentials_ready(&p, &["vertex"]).await;
    let h = wait_provider(&p, "bedrock", |v| v["credentials"] == "unavailable").await;
    let b = provider_health(&h, "bedrock");
    assert_eq!(b["state"], "unhealthy", "{h}");
    assert!(
        b["credentials_error"]
            .as_str()
            .unwrap()
            .contains("no AWS credentials"),
        "{b}"
    );
    assert_eq!(h["status"], "degraded", "vertex still serves the route");
    assert!(provider_health(&h, "vertex")
        .get("credentials_error")
        .is_none());
    let logged = p
        .wait_event("cloud_credentials_unavailable", |e| e["cloud"] == "aws")
        .await;
    assert_eq!(logged["providers"], serde_json::json!(["bedrock"]));

    let r = p.send(claude_code_request("/v1/messages", true, 64)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-steadfast-provider"), Some("vertex"));
    assert_eq!(
        chain_of(&request_log(&p, &r).await),
        pairs(&[("bedrock", "auth"), ("vertex", "success")])
    );
    assert!(
        clouds.bedrock.requests().is_empty(),
        "nothing unsigned went to Bedrock"
    );

    // A Bedrock-only route says why, not a mystery 403.
    let only = format!(
        "providers:\n{}routes:\n  - {{ name: messages, paths: [\"/v1/messages\"], providers: [bedrock] }}\n",
        clouds.providers()
    );
    p.write_config(&only);
    p.signal("HUP");
    p.wait_event("config_reloaded", |_| true).await;
    let r = p.send(claude_code_request("/v1/messages", false, 64)).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("AWS credentials unavailable"), "{msg}");
    assert!(clouds.bedrock.requests().is_empty());
    let h = health(&p).await;
    assert_eq!(h["status"], "unhealthy", "{h}");
}

#[tokio::test]
async fn a_reload_that_adds_the_first_cloud_provider_starts_its_credentials() {
    let clouds = Clouds::start("cloud-reload").await;
    let anthropic = common::anthropic("anthropic").await;
    let direct = format!(
        "providers:\n  - {{ name: anthropic, api: anthropic, base_url: \"http://{}\" }}\nroutes:\n  - {{ name: messages, paths: [\"/v1/messages\"], providers: [anthropic] }}\n",
        anthropic.addr()
    );
    let p = clouds.proxy("cloud-reload", &direct).start().await;
    let h = health(&p).await;
    assert!(provider_health(&h, "anthropic")
        .get("credentials")
        .is_none());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        clouds.tokens.issued().is_empty(),
        "no token is fetched while no provider needs one"
    );
    assert!(p.events("cloud_credentials_ready").is_empty());

    let with_clouds = format!(
        "providers:\n  - {{ name: anthropic, api: anthropic, base_url: \"http://{}\" }}\n{}routes:\n  - {{ name: messages, paths: [\"/v1/messages\"], strategy: priority, providers: [vertex, bedrock, anthropic] }}\n",
        anthropic.addr(),
        clouds.providers()
    );
    p.write_config(&with_clouds);
    p.signal("HUP");
    p.wait_event("config_reloaded", |_| true).await;
    credentials_ready(&p, &["bedrock", "vertex"]).await;
    let r = p.send(claude_code_request("/v1/messages", true, 64)).await;
    assert_eq!(
        r.header("x-steadfast-provider"),
        Some("vertex"),
        "{}",
        r.text()
    );
    assert_eq!(clouds.tokens.issued().len(), 1);
}

#[tokio::test]
async fn an_openai_client_on_a_translating_route_is_served_by_bedrock() {
    let clouds = Clouds::start("bedrock-chat").await;
    let body = format!(
        "providers:\n{}routes:\n  - {{ name: chat, paths: [\"/v1/chat/completions\"], translate: true, providers: [bedrock] }}\n",
        clouds.providers()
    );
    let p = clouds.proxy("bedrock-chat", &body).start().await;
    credentials_ready(&p, &["bedrock"]).await;
    let chat = |stream: bool| {
        serde_json::json!({
            "model": MODEL,
            "stream": stream,
            "max_tokens": 100,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        })
        .to_string()
    };

    let r = p
        .send(
            Request::post("/v1/chat/completions", chat(false))
                .header("authorization", "Bearer sk-openai-client-000000")
                .header("openai-organization", "org-1"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], BEDROCK_TEXT);
    let sent = clouds.bedrock.requests().pop().unwrap();
    assert_eq!(sent.header("openai-organization"), None);
    assert!(sent
        .header("authorization")
        .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256")));
    assert!(sent.json().to_string().contains("Be brief."));
    assert!(sent.json().get("model").is_none());
    assert!(sent.path().ends_with("/invoke"));

    let r = p
        .send(Request::post("/v1/chat/completions", chat(true)))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events = r.events();
    let text: String = events
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, BEDROCK_TEXT);
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"));

    clouds.bedrock.push(BedrockMode::Throttle);
    let r = p
        .send(Request::post("/v1/chat/completions", chat(true)))
        .await;
    assert_eq!(r.status, 429, "{}", r.text());
    let v = r.json();
    assert!(v["error"]["message"].as_str().is_some(), "{v}");
    assert!(v.get("type").is_none(), "OpenAI's error shape: {v}");
}

#[tokio::test]
async fn an_ejected_cloud_provider_is_brought_back_by_a_probe_that_sends_no_request() {
    let clouds = Clouds::start("cloud-probe").await;
    let body = format!(
        "providers:\n{}routes:\n  - {{ name: messages, paths: [\"/v1/messages\"], strategy: priority, providers: [bedrock, vertex] }}\nhealth:\n  eject_after_failures: 1\n  base_ejection_ms: 60000\n  max_ejection_ms: 60000\n  recovery_probe_interval_ms: 300\n",
        clouds.providers()
    );
    let p = clouds.proxy("cloud-probe", &body).start().await;
    credentials_ready(&p, &["bedrock", "vertex"]).await;
    clouds.bedrock.push(BedrockMode::Error(
        500,
        "InternalServerException",
        "internal",
    ));
    let r = p.send(claude_code_request("/v1/messages", false, 64)).await;
    assert_eq!(r.header("x-steadfast-provider"), Some("vertex"));
    p.wait_event("provider_ejected", |e| e["provider"] == "bedrock")
        .await;
    let back = p
        .wait_event("provider_recovered", |e| e["provider"] == "bedrock")
        .await;
    assert_eq!(back["via"], "probe");
    assert_eq!(
        clouds.bedrock.requests().len(),
        1,
        "the probe sent Bedrock no request"
    );
    let r = p.send(claude_code_request("/v1/messages", false, 64)).await;
    assert_eq!(r.header("x-steadfast-provider"), Some("bedrock"));
}

#[tokio::test]
async fn a_direct_providers_beta_filter_applies_to_its_header() {
    let a = common::anthropic("a").await;
    let b = common::anthropic("b").await;
    let body = format!(
        "providers:\n  - {{ name: a, api: anthropic, base_url: \"http://{}\", anthropic_beta: {{ deny: [\"context-1m-2025-08-07\"] }} }}\n  - {{ name: b, api: anthropic, base_url: \"http://{}\", anthropic_beta: {{ allow: [\"x-none\"] }} }}\nroutes:\n  - {{ name: a, paths: [\"/v1/messages\"], providers: [a] }}\n  - {{ name: b, paths: [\"/b/v1/messages\"], providers: [b] }}\n",
        a.addr(),
        b.addr()
    );
    let p = Proxy::builder("direct-beta", &body).start().await;
    let r = p
        .send(claude_code_request("/v1/messages?beta=true", false, 16))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = a.recorded().pop().unwrap();
    assert_eq!(
        sent.header("anthropic-beta"),
        Some("claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14")
    );
    assert_eq!(sent.header("x-api-key"), Some(CLIENT_KEY));
    let r = p
        .send(claude_code_request("/b/v1/messages", false, 16))
        .await;
    // (The mock knows no /b path: its 404 is the answer; what it was sent
    // is what counts.)
    assert_eq!(r.header("x-steadfast-provider"), Some("b"), "{}", r.text());
    let sent = b.recorded().pop().unwrap();
    assert_eq!(sent.header("anthropic-beta"), None, "nothing allowed");
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
}

/// Needs `pip install anthropic`: run with `--ignored`. (The fakes run on
/// this test's runtime while the script blocks a thread: multi-threaded.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn the_anthropic_sdk_talks_to_bedrock_and_vertex_through_steadfast() {
    let clouds = Clouds::start("sdk").await;
    for (provider, expected) in [("bedrock", BEDROCK_TEXT), ("vertex", VERTEX_TEXT)] {
        let body = format!(
            "providers:\n{}routes:\n  - {{ name: messages, paths: [\"/v1/messages\"], providers: [{provider}] }}\n",
            clouds.providers()
        );
        let p = clouds
            .proxy(&format!("sdk-{provider}"), &body)
            .start()
            .await;
        credentials_ready(&p, &[provider]).await;
        let base = format!("http://{}", p.proxy);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/cloud_sdk.py");
        let run = |mode: &str| {
            let out = std::process::Command::new("python3")
                .args([script, &base, expected, mode])
                .output()
                .expect("python3");
            assert!(
                out.status.success(),
                "{provider} {mode}: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                p.logs()
            );
        };
        run("ok");
        if provider == "bedrock" {
            let before = clouds.bedrock.requests().len();
            clouds.bedrock.push(BedrockMode::Throttle);
            run("throttled");
            assert_eq!(clouds.bedrock.requests().len(), before + 1);
            let beta = clouds.bedrock.requests()[before - 1].json();
            assert_eq!(
                beta["anthropic_beta"],
                serde_json::json!(["interleaved-thinking-2025-05-14"])
            );
        } else {
            clouds
                .vertex
                .push(VertexMode::Google(429, "RESOURCE_EXHAUSTED"));
            run("throttled");
        }
        assert!(clouds.bedrock.rejections().is_empty() && clouds.vertex.rejections().is_empty());
    }
}

#[tokio::test]
async fn the_example_config_serves_and_says_which_credentials_are_missing() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/examples/anthropic-bedrock-vertex.yaml"
    ))
    .unwrap();
    let home = test_dir("example-home");
    let p = bare_chains(Proxy::builder("example", &example))
        .env("ANTHROPIC_API_KEY", "sk-ant-example-key-000000")
        // No gcloud user credentials either.
        .env("HOME", home.to_str().unwrap())
        .start()
        .await;
    let h = wait_provider(&p, "bedrock-us", |v| v["credentials"] == "unavailable").await;
    assert_eq!(provider_health(&h, "bedrock-us")["state"], "unhealthy");
    assert!(provider_health(&h, "vertex-eu")
        .get("credentials")
        .is_some());
    let direct = provider_health(&h, "anthropic-direct");
    assert_eq!(direct["state"], "healthy");
    assert!(direct.get("credentials").is_none());
    assert_eq!(h["status"], "degraded", "{h}");
}

#[tokio::test]
async fn credentials_the_cloud_calls_expired_are_fetched_again_and_used_at_once() {
    // EKS Pod Identity's container endpoint, a new temporary key per call.
    let auth = "pod-identity-auth-token";
    let creds = FakeContainerCredentials::start(auth, Duration::from_secs(3600)).await;
    let keys: Vec<AwsKey> = (1..=3)
        .map(|n| {
            AwsKey::new(
                &format!("ASIAFAKE{n:08}"),
                &format!("fake-secret-{n}"),
                Some(&format!("fake-session-token-{n}")),
            )
        })
        .collect();
    let bedrock = FakeBedrock::start("us-east-1", keys).await;
    let body = format!(
        "providers:\n  - {{ name: bedrock, api: anthropic, kind: bedrock, region: us-east-1, base_url: \"{}\" }}\nroutes:\n  - {{ name: messages, paths: [\"/v1/messages\"], providers: [bedrock] }}\n",
        bedrock.base_url()
    );
    let p = bare_chains(Proxy::builder("pod-identity", &body))
        .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", &creds.uri())
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", auth)
        .start()
        .await;
    credentials_ready(&p, &["bedrock"]).await;
    let key_id = |r: &Received| {
        r.header("authorization")
            .and_then(|a| a.split("Credential=").nth(1))
            .and_then(|c| c.split('/').next())
            .map(str::to_string)
    };

    let ask = || {
        Request::post(
            "/v1/messages",
            serde_json::json!({"model": BEDROCK_MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
                .to_string(),
        )
    };
    let r = p.send(ask()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        key_id(&bedrock.requests()[0]).as_deref(),
        Some("ASIAFAKE00000001")
    );

    bedrock.push(BedrockMode::ExpiredToken);
    let r = p.send(ask()).await;
    assert_eq!(r.status, 401, "{}", r.text());
    // Asked at once, not at the next scheduled refresh an hour away.
    let deadline = Instant::now() + Duration::from_secs(15);
    while creds.served().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no refresh after the cloud said expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The fetched key lands in the cell a moment after the endpoint
    // served it; from then on every attempt is signed with it.
    loop {
        let r = p.send(ask()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let used = key_id(bedrock.requests().last().unwrap());
        if used.as_deref() == Some("ASIAFAKE00000002") {
            break;
        }
        assert_eq!(used.as_deref(), Some("ASIAFAKE00000001"));
        assert!(Instant::now() < deadline, "the new key is never used");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        bedrock.rejections().is_empty(),
        "{:?}",
        bedrock.rejections()
    );
    for secret in ["fake-secret-", "fake-session-token-"] {
        assert!(!p.logs().contains(secret), "{secret} in the logs");
    }
}
