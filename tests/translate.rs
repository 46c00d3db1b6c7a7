//! Failover across dialects (`routes[].translate`): a client of one API
//! dialect served by providers of another, requests and answers (JSON,
//! SSE, errors) translated, against the real binary.

mod common;

use common::http::{anthropic_body, openai_body, Request};
use common::scripted::{self, Then};
use common::*;
use serde_json::Value;
use std::net::SocketAddr;

const KEY: &str = "sk-provider-openai-0123456789";

fn provider_with_key(name: &str, api: &str, addr: SocketAddr) -> String {
    provider(name, api, addr, "    api_key_env: TR_PROVIDER_KEY\n")
}

async fn start(name: &str, yaml: &str) -> Proxy {
    Proxy::builder(name, yaml)
        .env("TR_PROVIDER_KEY", KEY)
        .start()
        .await
}

fn names(r: &common::http::Response) -> Vec<String> {
    r.events()
        .into_iter()
        .map(|(n, _)| n.unwrap_or_default())
        .collect()
}

/// The text of a Messages stream, from its text deltas.
fn messages_text(r: &common::http::Response) -> String {
    r.events()
        .into_iter()
        .filter(|(n, _)| n.as_deref() == Some("content_block_delta"))
        .filter_map(|(_, d)| serde_json::from_str::<Value>(&d).ok())
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_messages_client_is_served_by_an_openai_chat_provider() {
    let m = mock(MockApi::OpenAi, "gpt", Behavior::default()).await;
    let yaml = format!(
        "providers:\n{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], translate: true, providers: [o] }}\n",
        provider(
            "o",
            "openai",
            m.addr(),
            "    api_key_env: TR_PROVIDER_KEY\n    models: { \"claude-x\": \"gpt-4o\" }\n"
        )
    );
    let px = start("tr-m2c", &yaml).await;

    // Streaming, as Claude Code sends it (?beta=true, anthropic headers).
    let r = px
        .send(
            Request::post("/v1/messages?beta=true", anthropic_body("claude-x", true))
                .header("x-api-key", "sk-ant-client-key-must-not-leak")
                .header("anthropic-version", "2023-06-01")
                .header("anthropic-beta", "prompt-caching-2024-07-31"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.complete);
    let n = names(&r);
    assert_eq!(
        n.first().map(String::as_str),
        Some("message_start"),
        "{n:?}"
    );
    assert_eq!(n.last().map(String::as_str), Some("message_stop"), "{n:?}");
    assert_eq!(n.iter().filter(|e| *e == "message_start").count(), 1);
    assert_eq!(messages_text(&r), "Hello from gpt");

    // What the provider got: a Chat Completions request at its endpoint,
    // with its own key and no trace of the client's Anthropic credentials.
    let sent = m.recorded().pop().unwrap();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.header("authorization"),
        Some(&*format!("Bearer {KEY}"))
    );
    assert_eq!(sent.header("x-api-key"), None);
    assert_eq!(sent.header("anthropic-version"), None);
    assert_eq!(sent.header("anthropic-beta"), None);
    let body: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(body["model"], "gpt-4o");
    assert_eq!(body["stream"], true);
    assert_eq!(body["messages"][0]["role"], "user");

    // The access log shows the translation and the usage in Anthropic terms.
    let log = px.wait_event("request", |_| true).await;
    assert_eq!(
        log["attempt_chain"][0]["translated"], "anthropic->openai",
        "{log}"
    );
    assert_eq!(log["tokens"]["input"], 11, "{log}");
    assert_eq!(log["tokens"]["output"], 7, "{log}");

    // Not streaming: a Messages JSON answer.
    let r = px
        .send(Request::post(
            "/v1/messages",
            anthropic_body("claude-x", false),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], "Hello from gpt");
    assert_eq!(v["usage"]["input_tokens"], 11);
    assert_eq!(
        r.header("content-length")
            .map(|l| l.parse::<usize>().unwrap()),
        Some(r.body.len())
    );

    let metrics = http::send(px.admin, http::Request::get("/metrics"))
        .await
        .text();
    assert!(
        metrics
            .contains("steadfast_translations_total{from_api=\"anthropic\",to_api=\"openai\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn anthropic_overloaded_fails_over_to_openai_in_the_clients_dialect() {
    let a = mock(MockApi::Anthropic, "claude", status(529)).await;
    let o = mock(MockApi::OpenAi, "gpt", Behavior::default()).await;
    let yaml = format!(
        "providers:\n{}{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], translate: true, providers: [a, o] }}\n",
        provider("a", "anthropic", a.addr(), ""),
        provider_with_key("o", "openai", o.addr())
    );
    let px = start("tr-failover", &yaml).await;
    let r = px
        .send(Request::post(
            "/v1/messages",
            anthropic_body("claude-x", true),
        ))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-steadfast-provider"), Some("o"));
    assert_eq!(messages_text(&r), "Hello from gpt");
    let log = px.wait_event("request", |_| true).await;
    let chain = log["attempt_chain"].as_array().unwrap();
    assert_eq!(chain[0]["result"], "server");
    assert_eq!(chain[0]["translated"], Value::Null);
    assert_eq!(chain[1]["translated"], "anthropic->openai");
}

#[tokio::test]
async fn an_error_inside_a_translated_200_fails_over_before_content() {
    let o = mock(
        MockApi::OpenAi,
        "gpt",
        Behavior {
            error_event_after: Some(0),
            ..Behavior::default()
        },
    )
    .await;
    let a = anthropic("claude").await;
    let yaml = format!(
        "providers:\n{}{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], translate: true, providers: [o, a] }}\n",
        provider_with_key("o", "openai", o.addr()),
        provider("a", "anthropic", a.addr(), "")
    );
    let px = start("tr-precontent", &yaml).await;
    let r = px
        .send(Request::post(
            "/v1/messages",
            anthropic_body("claude-x", true),
        ))
        .await;
    assert_eq!(r.header("x-steadfast-provider"), Some("a"));
    let n = names(&r);
    assert_eq!(
        n.iter().filter(|e| *e == "message_start").count(),
        1,
        "{n:?}"
    );
    assert!(!n.contains(&"error".to_string()), "{}", r.text());
    let log = px.wait_event("request", |_| true).await;
    assert_eq!(log["attempt_chain"][0]["result"], "server", "{log}");
    assert_eq!(log["attempt_chain"][0]["pre_content"], true, "{log}");
}

/// Claude Code 2.1 puts system text in messages of role "system" (after
/// the last user turn); a translated route must carry them, not refuse
/// every request Claude Code makes.
#[tokio::test]
async fn claude_codes_mid_conversation_system_messages_reach_a_chat_provider() {
    let m = mock(MockApi::OpenAi, "gpt", Behavior::default()).await;
    let yaml = format!(
        "providers:\n{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], translate: true, providers: [o] }}\n",
        provider_with_key("o", "openai", m.addr())
    );
    let px = start("tr-system-role", &yaml).await;
    let body = serde_json::json!({
        "model": "claude-x",
        "max_tokens": 64,
        "stream": true,
        "system": [{"type": "text", "text": "You are a Claude agent."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "say hi"}]},
            {"role": "system", "content": "Available agent types: claude."}
        ]
    });
    let r = px
        .send(
            Request::post("/v1/messages?beta=true", body.to_string().into_bytes())
                .header("anthropic-beta", "mid-conversation-system-2026-04-07"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(messages_text(&r), "Hello from gpt");
    let sent: Value = serde_json::from_slice(&m.recorded().pop().unwrap().body).unwrap();
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "system"], "{sent}");
    assert_eq!(
        sent["messages"][2]["content"],
        "Available agent types: claude."
    );
}

#[tokio::test]
async fn a_translated_providers_errors_come_back_in_the_clients_dialect() {
    let o = mock(
        MockApi::OpenAi,
        "gpt",
        Behavior {
            status: 429,
            retry_after: Some("7".into()),
            ..Behavior::default()
        },
    )
    .await;
    let yaml = format!(
        "providers:\n{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], translate: true, providers: [o] }}\n",
        provider_with_key("o", "openai", o.addr())
    );
    let px = start("tr-error", &yaml).await;
    let r = px
        .send(Request::post(
            "/v1/messages",
            anthropic_body("claude-x", false),
        ))
        .await;
    assert_eq!(r.status, 429, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.header("x-steadfast-error-class"), Some("rate_limit"));
}

#[tokio::test]
async fn a_chat_client_is_served_by_an_anthropic_provider() {
    let a = anthropic("claude").await;
    let yaml = format!(
        "providers:\n{}routes:\n  - {{ name: c, paths: [\"/v1/chat/completions\"], translate: true, providers: [a] }}\n",
        provider_with_key("a", "anthropic", a.addr())
    );
    let px = start("tr-c2m", &yaml).await;
    let r = px
        .send(Request::post(
            "/v1/chat/completions",
            openai_body("gpt-x", true),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let chunks: Vec<Value> = r
        .events()
        .into_iter()
        // Anthropic's pings come through as SSE comments, which carry no data.
        .filter(|(_, d)| d != "[DONE]" && !d.is_empty())
        .map(|(_, d)| serde_json::from_str(&d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello from claude");
    assert_eq!(r.events().last().unwrap().1, "[DONE]");
    // include_usage was asked for: the usage chunk, in OpenAI's terms.
    let usage = chunks
        .iter()
        .find(|c| c["usage"].is_object())
        .expect("usage chunk");
    assert_eq!(usage["usage"]["prompt_tokens"], 11);
    assert_eq!(usage["usage"]["completion_tokens"], 7);
    let sent = a.recorded().pop().unwrap();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some(KEY));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("authorization"), None);
}

#[tokio::test]
async fn a_messages_client_is_served_by_a_responses_provider() {
    let r_mock = mock(MockApi::OpenAi, "resp", Behavior::default()).await;
    let yaml = format!(
        "providers:\n{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], translate: true, providers: [r] }}\n",
        provider_with_key("r", "openai_responses", r_mock.addr())
    );
    let px = start("tr-m2r", &yaml).await;
    let r = px
        .send(Request::post(
            "/v1/messages",
            anthropic_body("claude-x", true),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(messages_text(&r), "Hello from resp");
    assert_eq!(r_mock.recorded().pop().unwrap().path, "/v1/responses");
}

/// A provider may stream with a Content-Length instead of chunking. The
/// translated stream has another length: the provider's must not reach the
/// client, or its stream is cut short (or waits for bytes that never come)
/// and it retries. Found with Claude Code through a translated route.
#[tokio::test]
async fn a_translated_stream_does_not_inherit_the_providers_content_length() {
    let stream = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/corpus/translate/chat/stream_parallel_tools.sse"
    ))
    .unwrap();
    let up = scripted::upstream(scripted::events_of(&stream), Then::Length).await;
    let yaml = format!(
        "providers:\n{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], translate: true, providers: [o] }}\n",
        provider_with_key("o", "openai", up.addr)
    );
    let px = start("tr-length", &yaml).await;
    for _ in 0..2 {
        let r = px
            .send(Request::post(
                "/v1/messages",
                anthropic_body("claude-x", true),
            ))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.complete, "{}", r.text());
        if let Some(len) = r.header("content-length") {
            assert_eq!(len.parse::<usize>().unwrap(), r.body.len(), "{}", r.text());
        }
        let n = names(&r);
        assert_eq!(n.last().map(String::as_str), Some("message_stop"), "{n:?}");
        assert_eq!(n.iter().filter(|e| *e == "message_stop").count(), 1);
    }
    let log = px.wait_event("request", |_| true).await;
    assert_eq!(log["class"], "success", "{log}");
}

#[tokio::test]
async fn a_claude_code_tool_turn_completes_against_an_openai_chat_provider() {
    // The provider answers with parallel tool calls, streamed argument by
    // argument, as OpenAI does.
    let stream = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/corpus/translate/chat/stream_parallel_tools.sse"
    ))
    .unwrap();
    let up = scripted::upstream(scripted::events_of(&stream), Then::End).await;
    let yaml = format!(
        "providers:\n{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], translate: true, providers: [o] }}\n",
        provider_with_key("o", "openai", up.addr)
    );
    let px = start("tr-tools", &yaml).await;
    let request = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/corpus/translate/messages/request_claude_code.json"
    ))
    .unwrap();
    let mut streamed: Value = serde_json::from_slice(&request).unwrap();
    streamed["stream"] = Value::Bool(true);
    let r = px
        .send(Request::post(
            "/v1/messages?beta=true",
            streamed.to_string(),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Reassemble the tool calls the client saw.
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut stop = None;
    for (name, data) in r.events() {
        let v: Value = serde_json::from_str(&data).unwrap();
        match name.as_deref() {
            Some("content_block_start") if v["content_block"]["type"] == "tool_use" => {
                calls.push((
                    v["content_block"]["name"].as_str().unwrap().to_string(),
                    String::new(),
                ));
            }
            Some("content_block_delta") if v["delta"]["type"] == "input_json_delta" => {
                calls.last_mut().unwrap().1 += v["delta"]["partial_json"].as_str().unwrap();
            }
            Some("message_delta") => stop = v["delta"]["stop_reason"].as_str().map(str::to_string),
            _ => {}
        }
    }
    assert!(calls.len() >= 2, "parallel calls kept apart: {calls:?}");
    for (name, args) in &calls {
        let parsed: Result<Value, _> = serde_json::from_str(args);
        assert!(parsed.is_ok(), "{name}: arguments are whole JSON: {args}");
    }
    assert_eq!(stop.as_deref(), Some("tool_use"));
    // The provider got a Chat request with the tools translated.
    let sent: Value = serde_json::from_slice(&up.received()[0].body).unwrap();
    assert!(
        sent["tools"].as_array().is_some_and(|t| !t.is_empty()),
        "{sent}"
    );
    assert_eq!(sent["tools"][0]["type"], "function");
}

#[tokio::test]
async fn an_untranslatable_request_skips_the_provider_and_goes_on() {
    let o = mock(MockApi::OpenAi, "gpt", Behavior::default()).await;
    let a = anthropic("claude").await;
    let request = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/corpus/translate/messages/request_server_tool.json"
    ))
    .unwrap();
    let yaml = format!(
        "providers:\n{}{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], translate: true, providers: [o, a] }}\n",
        provider_with_key("o", "openai", o.addr()),
        provider("a", "anthropic", a.addr(), "")
    );
    let px = start("tr-refuse", &yaml).await;
    let r = px
        .send(Request::post("/v1/messages", request.clone()))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-steadfast-provider"), Some("a"));
    assert_eq!(o.requests(), 0, "nothing degraded was sent");
    px.wait_event("provider_skipped", |v| v["provider"] == "o")
        .await;

    // With no provider able to take it: a 400 in the client's dialect
    // saying why.
    let yaml = format!(
        "providers:\n{}routes:\n  - {{ name: m, paths: [\"/v1/messages\"], translate: true, providers: [o] }}\n",
        provider_with_key("o", "openai", o.addr())
    );
    let px = start("tr-refuse-only", &yaml).await;
    let r = px.send(Request::post("/v1/messages", request)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot translate"),
        "{v}"
    );
    assert_eq!(o.requests(), 0);
}
