//! Request and JSON-answer translation over the reference corpus
//! (tests/corpus/translate/, written from the vendors' API references),
//! checked field by field.

use super::*;
use crate::config::Api;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub(crate) fn corpus(path: &str) -> String {
    let p = format!(
        "{}/tests/corpus/translate/{path}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn req(client: Api, upstream: Api, path: &str) -> (Value, Translated) {
    let t = translate_request(client, upstream, corpus(path).as_bytes(), &BTreeMap::new())
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    (serde_json::from_slice(&t.body).unwrap(), t)
}

fn refused(client: Api, upstream: Api, body: &str) -> String {
    translate_request(client, upstream, body.as_bytes(), &BTreeMap::new())
        .map(|t| String::from_utf8_lossy(&t.body).into_owned())
        .expect_err("should be refused")
        .0
}

#[test]
fn claude_code_request_to_chat() {
    let (v, t) = req(
        Api::Anthropic,
        Api::OpenAi,
        "messages/request_claude_code.json",
    );
    assert_eq!(v["model"], "claude-sonnet-4-5");
    assert_eq!(v["max_completion_tokens"], 32000);
    assert!(v.get("max_tokens").is_none());
    assert_eq!(v["stream"], true);
    assert_eq!(v["stream_options"], json!({"include_usage": true}));
    assert_eq!(v["temperature"], 1.0);
    assert_eq!(v["user"], "user_abc123_account__session_0f1e");
    let m = v["messages"].as_array().unwrap();
    assert_eq!(m.len(), 4, "{m:#?}");
    assert_eq!(m[0]["role"], "system");
    assert_eq!(
        m[0]["content"],
        "You are Claude Code, Anthropic's official CLI for Claude.\n\nYou are an interactive CLI tool that helps users with software engineering tasks."
    );
    assert_eq!(m[1]["role"], "user");
    assert_eq!(m[1]["content"][0]["type"], "text");
    assert_eq!(
        m[1]["content"][1]["text"],
        "What files are in this directory?"
    );
    assert_eq!(m[2]["role"], "assistant");
    assert_eq!(m[2]["content"], "I'll list them.");
    let call = &m[2]["tool_calls"][0];
    assert_eq!(call["id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "Bash");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"command": "ls -la"}));
    assert_eq!(m[3]["role"], "tool");
    assert_eq!(m[3]["tool_call_id"], "toolu_01A09q90qw90lq917835lq9");
    assert!(m[3]["content"].as_str().unwrap().starts_with("total 8\n"));
    let tools = v["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 2);
    assert_eq!(tools[0]["type"], "function");
    assert_eq!(tools[0]["function"]["name"], "Bash");
    assert_eq!(
        tools[0]["function"]["parameters"]["required"],
        json!(["command"])
    );
    assert_eq!(
        tools[0]["function"]["parameters"]["$schema"],
        "http://json-schema.org/draft-07/schema#"
    );
    assert!(t.notes.contains(Note::CacheControlDropped));
    assert!(t.reply.stream && t.reply.include_usage);
    // Nothing Anthropic-only leaks through.
    for k in ["system", "metadata", "max_tokens", "thinking"] {
        assert!(v.get(k).is_none(), "{k}");
    }
    assert!(!String::from_utf8_lossy(&t.body).contains("cache_control"));
}

#[test]
fn claude_code_request_to_responses() {
    let (v, _) = req(
        Api::Anthropic,
        Api::OpenAiResponses,
        "messages/request_claude_code.json",
    );
    assert_eq!(v["store"], false);
    assert_eq!(v["max_output_tokens"], 32000);
    assert!(v["instructions"]
        .as_str()
        .unwrap()
        .starts_with("You are Claude Code"));
    let input = v["input"].as_array().unwrap();
    assert_eq!(input[0]["role"], "user");
    assert_eq!(input[0]["content"][1]["type"], "input_text");
    assert_eq!(input[1]["role"], "assistant");
    assert_eq!(
        input[1]["content"][0],
        json!({"type": "output_text", "text": "I'll list them."})
    );
    assert_eq!(input[2]["type"], "function_call");
    assert_eq!(input[2]["call_id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(input[2]["name"], "Bash");
    assert_eq!(input[3]["type"], "function_call_output");
    assert_eq!(input[3]["call_id"], "toolu_01A09q90qw90lq917835lq9");
    assert!(input[3]["output"].as_str().unwrap().contains("README.md"));
    let tools = v["tools"].as_array().unwrap();
    assert_eq!(tools[0]["type"], "function");
    assert_eq!(tools[0]["name"], "Bash");
    assert_eq!(tools[0]["strict"], false);
    assert_eq!(tools[0]["parameters"]["type"], "object");
    assert_eq!(v["user"], "user_abc123_account__session_0f1e");
    assert!(v.get("stream_options").is_none());
}

/// Claude Code 2.1 (beta `mid-conversation-system-2026-04-07`) sends
/// system text as messages of role "system", after the last user turn.
#[test]
fn claude_code_mid_conversation_system_messages_to_chat() {
    let (v, t) = req(
        Api::Anthropic,
        Api::OpenAi,
        "messages/request_claude_code_2_1.json",
    );
    let m = v["messages"].as_array().unwrap();
    assert_eq!(m.len(), 4, "{m:#?}");
    assert_eq!(m[0]["role"], "system");
    assert!(m[0]["content"]
        .as_str()
        .unwrap()
        .ends_with("built on Anthropic's Claude Agent SDK."));
    assert_eq!(m[1]["role"], "user");
    assert_eq!(m[1]["content"][1]["text"], "say hi");
    // In place, in order, as Chat system messages.
    assert_eq!(
        m[2],
        json!({"role": "system", "content": "Available agent types for the Agent tool:\n- claude: Catch-all for any task."})
    );
    assert_eq!(
        m[3],
        json!({"role": "system", "content": "Skills available:\n\n- review"})
    );
    assert!(t.notes.contains(Note::CacheControlDropped));
    assert!(!String::from_utf8_lossy(&t.body).contains("cache_control"));
}

#[test]
fn claude_code_mid_conversation_system_messages_to_responses() {
    let (v, _) = req(
        Api::Anthropic,
        Api::OpenAiResponses,
        "messages/request_claude_code_2_1.json",
    );
    assert!(v["instructions"]
        .as_str()
        .unwrap()
        .starts_with("x-anthropic-billing-header"));
    let input = v["input"].as_array().unwrap();
    assert_eq!(input.len(), 3, "{input:#?}");
    assert_eq!(input[0]["role"], "user");
    assert_eq!(
        input[1],
        json!({"role": "system", "content": [
            {"type": "input_text", "text": "Available agent types for the Agent tool:\n- claude: Catch-all for any task."}
        ]})
    );
    assert_eq!(input[2]["role"], "system");
    assert_eq!(
        input[2]["content"],
        json!([
            {"type": "input_text", "text": "Skills available:"},
            {"type": "input_text", "text": "- review"}
        ])
    );
}

#[test]
fn a_system_message_with_a_non_text_block_is_refused() {
    let body = r#"{"model":"m","max_tokens":8,"messages":[
        {"role":"user","content":"hi"},
        {"role":"system","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA=="}}]}
    ]}"#;
    for upstream in [Api::OpenAi, Api::OpenAiResponses] {
        let e = refused(Api::Anthropic, upstream, body);
        assert!(e.contains("a system block of type \"image\""), "{e}");
    }
}

#[test]
fn multi_tool_history_and_tool_errors_to_chat() {
    let (v, t) = req(
        Api::Anthropic,
        Api::OpenAi,
        "messages/request_multi_tool.json",
    );
    let m = v["messages"].as_array().unwrap();
    assert_eq!(
        m[0],
        json!({"role": "system", "content": "You are a weather bot."})
    );
    assert_eq!(
        m[1]["content"],
        "What is the weather like in Paris and what time is it in Tokyo?"
    );
    assert_eq!(m[2]["content"], "Let me check both.");
    assert_eq!(m[2]["tool_calls"].as_array().unwrap().len(), 2);
    assert_eq!(m[2]["tool_calls"][1]["id"], "toolu_02");
    // Tool results become tool messages in order, before the user's text.
    assert_eq!(m[3]["role"], "tool");
    assert_eq!(m[3]["tool_call_id"], "toolu_01");
    assert_eq!(m[3]["content"], "15 degrees, cloudy");
    assert_eq!(m[4]["tool_call_id"], "toolu_02");
    assert_eq!(m[4]["content"], "ERROR: time service unavailable");
    assert_eq!(
        m[5],
        json!({"role": "user", "content": "Try again for Tokyo please."})
    );
    assert_eq!(v["tool_choice"], "required");
    assert!(v.get("parallel_tool_calls").is_none());
    assert_eq!(v["stop"], json!(["\n\nHuman:", "END"]));
    assert_eq!(v["temperature"], 0.2);
    assert_eq!(v["top_p"], 0.9);
    assert!(v.get("top_k").is_none());
    assert!(v.get("stream").is_none());
    assert!(t.notes.contains(Note::TopKDropped));
    assert!(t.notes.contains(Note::ToolErrorFlagDropped));
    assert!(!t.reply.stream);
}

#[test]
fn stop_sequences_the_target_cannot_hold_are_refused() {
    let e = refused(
        Api::Anthropic,
        Api::OpenAiResponses,
        &corpus("messages/request_multi_tool.json"),
    );
    assert!(e.contains("stop_sequences"), "{e}");
    let five = r#"{"model":"m","max_tokens":5,"stop_sequences":["a","b","c","d","e"],"messages":[{"role":"user","content":"x"}]}"#;
    assert!(refused(Api::Anthropic, Api::OpenAi, five).contains("5 stop sequences"));
}

#[test]
fn images_documents_and_tool_result_images() {
    let (v, t) = req(Api::Anthropic, Api::OpenAi, "messages/request_images.json");
    let m = v["messages"].as_array().unwrap();
    let parts = m[0]["content"].as_array().unwrap();
    assert_eq!(parts[0]["type"], "image_url");
    assert!(parts[0]["image_url"]["url"]
        .as_str()
        .unwrap()
        .starts_with("data:image/png;base64,iVBORw0KGgo"));
    assert_eq!(
        parts[1]["image_url"]["url"],
        "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"
    );
    assert_eq!(parts[2]["type"], "file");
    assert_eq!(parts[2]["file"]["filename"], "spec.pdf");
    assert_eq!(
        parts[2]["file"]["file_data"],
        "data:application/pdf;base64,JVBERi0xLjQK"
    );
    assert_eq!(parts[3], json!({"type": "text", "text": "Compare these."}));
    assert_eq!(m[1]["content"], Value::Null);
    assert_eq!(m[1]["tool_calls"][0]["function"]["arguments"], "{}");
    assert_eq!(m[2]["role"], "tool");
    assert_eq!(m[2]["content"], "Screenshot taken");
    // The result's image follows in a user message.
    assert_eq!(m[3]["role"], "user");
    assert_eq!(
        m[3]["content"][0]["image_url"]["url"],
        "data:image/jpeg;base64,/9j/4AAQSkZJRg=="
    );
    assert!(t.notes.contains(Note::ToolResultImagesMoved));

    let (v, _) = req(
        Api::Anthropic,
        Api::OpenAiResponses,
        "messages/request_images.json",
    );
    let input = v["input"].as_array().unwrap();
    let parts = input[0]["content"].as_array().unwrap();
    assert_eq!(parts[0]["type"], "input_image");
    assert!(parts[0]["image_url"]
        .as_str()
        .unwrap()
        .starts_with("data:image/png;base64,"));
    assert_eq!(
        parts[1]["image_url"].as_str().unwrap(),
        "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"
    );
    assert_eq!(parts[2]["type"], "input_file");
    assert_eq!(
        parts[2]["file_data"],
        "data:application/pdf;base64,JVBERi0xLjQK"
    );
    assert_eq!(input[1]["type"], "function_call");
    assert_eq!(input[2]["type"], "function_call_output");
    assert_eq!(
        input[2]["output"][0],
        json!({"type": "input_text", "text": "Screenshot taken"})
    );
    assert_eq!(input[2]["output"][1]["type"], "input_image");
}

#[test]
fn thinking_history_is_never_replayed_and_effort_needs_a_reasoning_model() {
    let (v, t) = req(
        Api::Anthropic,
        Api::OpenAi,
        "messages/request_thinking.json",
    );
    let body = serde_json::to_string(&v).unwrap();
    assert!(
        !body.contains("signature") && !body.contains("EqQBCgIYAhIM"),
        "{body}"
    );
    assert!(!body.contains("Check divisors"));
    assert_eq!(
        v["messages"][1],
        json!({"role": "assistant", "content": "Yes, 1009 is prime."})
    );
    assert!(t.notes.contains(Note::ThinkingHistoryDropped));
    // claude-sonnet is not an OpenAI reasoning model: no effort sent.
    assert!(v.get("reasoning_effort").is_none());
    assert!(t.notes.contains(Note::ThinkingNotRequested));

    let mut models = BTreeMap::new();
    models.insert("claude-sonnet-4-5".to_string(), "o4-mini".to_string());
    let body = corpus("messages/request_thinking.json");
    let t = translate_request(Api::Anthropic, Api::OpenAi, body.as_bytes(), &models).unwrap();
    let v: Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(v["model"], "o4-mini");
    assert_eq!(v["reasoning_effort"], "medium");
    let t = translate_request(
        Api::Anthropic,
        Api::OpenAiResponses,
        body.as_bytes(),
        &models,
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(v["reasoning"], json!({"effort": "medium"}));
    assert!(!String::from_utf8_lossy(&t.body).contains("signature"));
}

#[test]
fn anthropic_only_features_are_refused_with_their_name() {
    let e = refused(
        Api::Anthropic,
        Api::OpenAi,
        &corpus("messages/request_server_tool.json"),
    );
    assert!(e.contains("web_search"), "{e}");
    let mcp = r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"mcp_servers":[{"type":"url","url":"https://x","name":"x"}]}"#;
    assert!(refused(Api::Anthropic, Api::OpenAiResponses, mcp).contains("mcp_servers"));
    let long = format!(
        r#"{{"model":"m","max_tokens":5,"messages":[{{"role":"user","content":"x"}}],"tools":[{{"name":"{}","input_schema":{{"type":"object"}}}}]}}"#,
        "t".repeat(65)
    );
    assert!(refused(Api::Anthropic, Api::OpenAi, &long).contains("64"));
    assert!(
        refused(Api::Anthropic, Api::OpenAi, "{not json").contains("not a valid anthropic request")
    );
    let search = r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"container_upload","file_id":"file_1"}]}]}"#;
    assert!(refused(Api::Anthropic, Api::OpenAi, search).contains("container_upload"));
}

#[test]
fn chat_request_with_tools_to_messages() {
    let (v, t) = req(Api::OpenAi, Api::Anthropic, "chat/request_tools.json");
    assert_eq!(v["model"], "gpt-4o");
    assert_eq!(v["max_tokens"], 700);
    assert_eq!(
        v["system"],
        json!([{"type": "text", "text": "You are a helpful assistant."}])
    );
    assert_eq!(v["stream"], true);
    assert_eq!(v["temperature"], 1.0, "clamped into Anthropic's range");
    assert_eq!(v["top_p"], 0.8);
    assert_eq!(v["stop_sequences"], json!(["END"]));
    assert_eq!(v["metadata"], json!({"user_id": "user-1234"}));
    assert_eq!(
        v["tool_choice"],
        json!({"type": "tool", "name": "get_current_weather", "disable_parallel_tool_use": true})
    );
    assert_eq!(v["tools"][0]["name"], "get_current_weather");
    assert_eq!(
        v["tools"][0]["input_schema"]["required"],
        json!(["location"])
    );
    let m = v["messages"].as_array().unwrap();
    assert_eq!(m.len(), 3, "{m:#?}");
    assert_eq!(m[0]["role"], "user");
    assert_eq!(
        m[0]["content"][0]["text"],
        "What's the weather like in Boston and in Paris today?"
    );
    assert_eq!(m[1]["role"], "assistant");
    let calls = m[1]["content"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["type"], "tool_use");
    assert_eq!(calls[0]["id"], "call_abc");
    assert_eq!(calls[0]["input"], json!({"location": "Boston, MA"}));
    assert_eq!(calls[1]["input"], json!({"location": "Paris"}));
    // Both tool results and the next user message: one user turn, results first.
    let user = m[2]["content"].as_array().unwrap();
    assert_eq!(user[0]["type"], "tool_result");
    assert_eq!(user[0]["tool_use_id"], "call_abc");
    assert_eq!(
        user[0]["content"],
        "{\"temperature\": 22, \"unit\": \"celsius\"}"
    );
    assert_eq!(user[1]["tool_use_id"], "call_def");
    assert_eq!(user[1]["content"], "18C, light rain");
    assert_eq!(
        user[2],
        json!({"type": "text", "text": "And what does this show?"})
    );
    assert_eq!(
        user[3]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="})
    );
    assert_eq!(
        user[4]["source"],
        json!({"type": "url", "url": "https://example.com/chart.png"})
    );
    for n in [
        Note::TemperatureClamped,
        Note::NameDropped,
        Note::SamplingDropped,
        Note::MetadataDropped,
    ] {
        assert!(t.notes.contains(n), "{n:?}");
    }
    assert!(t.reply.stream && t.reply.include_usage);
    for k in [
        "seed",
        "stream_options",
        "parallel_tool_calls",
        "max_completion_tokens",
        "user",
        "n",
    ] {
        assert!(v.get(k).is_none(), "{k}");
    }
}

#[test]
fn chat_reasoning_effort_becomes_a_thinking_budget() {
    let (v, t) = req(Api::OpenAi, Api::Anthropic, "chat/request_reasoning.json");
    assert_eq!(
        v["thinking"],
        json!({"type": "enabled", "budget_tokens": 8192})
    );
    assert_eq!(v["max_tokens"], 4096 + 8192);
    assert!(
        v.get("temperature").is_none(),
        "thinking takes no temperature"
    );
    assert_eq!(v["system"][0]["text"], "Think step by step.");
    assert!(t.notes.contains(Note::MaxTokensDefaulted));
    assert!(t.notes.contains(Note::SamplingDropped));
    assert!(!t.reply.stream);
    // A pending tool turn the client has no thinking for: no thinking.
    let mid = r#"{"model":"o3","reasoning_effort":"high","messages":[
        {"role":"user","content":"x"},
        {"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
        {"role":"tool","tool_call_id":"c1","content":"ok"}],
        "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}"#;
    let t = translate_request(
        Api::OpenAi,
        Api::Anthropic,
        mid.as_bytes(),
        &BTreeMap::new(),
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&t.body).unwrap();
    assert!(v.get("thinking").is_none());
    assert!(t.notes.contains(Note::ThinkingDisabledForTurn));
}

#[test]
fn chat_features_without_an_anthropic_counterpart_are_refused() {
    assert!(
        refused(Api::OpenAi, Api::Anthropic, &corpus("chat/request_n2.json")).contains("n > 1")
    );
    assert!(refused(
        Api::OpenAi,
        Api::Anthropic,
        &corpus("chat/request_json_schema.json")
    )
    .contains("json_schema"));
    let bad_args = r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\": "}}]}]}"#;
    assert!(refused(Api::OpenAi, Api::Anthropic, bad_args).contains("not valid JSON"));
    let audio =
        r#"{"model":"m","modalities":["text","audio"],"messages":[{"role":"user","content":"x"}]}"#;
    assert!(refused(Api::OpenAi, Api::Anthropic, audio).contains("audio"));
    let file_id = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-1"}}]}]}"#;
    assert!(refused(Api::OpenAi, Api::Anthropic, file_id).contains("file_id"));
    // Directions not offered.
    assert!(refused(Api::OpenAi, Api::OpenAiResponses, "{}").contains("not translated"));
    assert!(refused(Api::OpenAiResponses, Api::Anthropic, "{}").contains("not translated"));
}

#[test]
fn round_trip_messages_chat_messages_keeps_the_conversation() {
    // Messages → Chat → Messages: what a Claude Code turn means survives.
    let (chat, _) = req(
        Api::Anthropic,
        Api::OpenAi,
        "messages/request_multi_tool.json",
    );
    let mut chat = chat;
    chat["stop"] = json!(["END"]);
    let back = translate_request(
        Api::OpenAi,
        Api::Anthropic,
        serde_json::to_vec(&chat).unwrap().as_slice(),
        &BTreeMap::new(),
    )
    .unwrap();
    let back: Value = serde_json::from_slice(&back.body).unwrap();
    let orig: Value = serde_json::from_str(&corpus("messages/request_multi_tool.json")).unwrap();
    assert_eq!(back["max_tokens"], orig["max_tokens"]);
    assert_eq!(back["system"][0]["text"], orig["system"]);
    assert_eq!(
        back["tools"][0]["input_schema"],
        orig["tools"][0]["input_schema"]
    );
    assert_eq!(back["tool_choice"]["type"], "any");
    let (bm, om) = (
        back["messages"].as_array().unwrap(),
        orig["messages"].as_array().unwrap(),
    );
    assert_eq!(bm.len(), om.len());
    assert_eq!(bm[0]["content"][0]["text"], om[0]["content"]);
    assert_eq!(bm[1]["content"][0]["text"], om[1]["content"][0]["text"]);
    for i in 1..3 {
        assert_eq!(bm[1]["content"][i]["id"], om[1]["content"][i]["id"]);
        assert_eq!(bm[1]["content"][i]["input"], om[1]["content"][i]["input"]);
    }
    assert_eq!(bm[2]["content"][0]["tool_use_id"], "toolu_01");
    assert_eq!(bm[2]["content"][0]["content"], "15 degrees, cloudy");
    assert_eq!(bm[2]["content"][2]["text"], "Try again for Tokyo please.");
}

// ---- JSON answers

fn reply(upstream: Api, client: Api, path: &str) -> (Value, TranslatedReply) {
    let ctx = ReplyContext {
        created: 1_700_000_000,
        ..ReplyContext::default()
    };
    let r = translate_response(upstream, client, corpus(path).as_bytes(), &ctx)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    (serde_json::from_slice(&r.body).unwrap(), r)
}

#[test]
fn chat_tool_calls_answer_to_messages() {
    let (v, r) = reply(Api::OpenAi, Api::Anthropic, "chat/response_tools.json");
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["id"], "chatcmpl-abc123");
    assert_eq!(v["model"], "gpt-4o-2024-08-06");
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["stop_sequence"], Value::Null);
    let c = v["content"].as_array().unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(c[0]["type"], "tool_use");
    assert_eq!(c[0]["id"], "call_abc123");
    assert_eq!(c[0]["input"], json!({"location": "Boston, MA"}));
    assert_eq!(
        c[1]["input"],
        json!({}),
        "empty arguments are an empty input"
    );
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 18, "output_tokens": 17, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 64})
    );
    assert_eq!(r.stop, StopReason::ToolUse);
    assert_eq!(r.usage.cache_read, 64);
}

#[test]
fn refusals_and_length_stops_to_messages() {
    let (v, _) = reply(Api::OpenAi, Api::Anthropic, "chat/response_refusal.json");
    assert_eq!(v["stop_reason"], "refusal");
    assert_eq!(v["content"][0]["text"], "I can't assist with that request.");
    let (v, _) = reply(Api::OpenAi, Api::Anthropic, "chat/response_length.json");
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "The quick brown"}])
    );
    let (v, _) = reply(
        Api::OpenAiResponses,
        Api::Anthropic,
        "responses/response_incomplete.json",
    );
    assert_eq!(v["stop_reason"], "max_tokens");
    let (v, _) = reply(
        Api::OpenAiResponses,
        Api::Anthropic,
        "responses/response_refusal.json",
    );
    assert_eq!(v["stop_reason"], "refusal");
    assert_eq!(v["content"][0]["text"], "I can't help with that.");
}

#[test]
fn responses_answer_to_messages() {
    let (v, r) = reply(
        Api::OpenAiResponses,
        Api::Anthropic,
        "responses/response_tools.json",
    );
    assert_eq!(v["id"], "resp_nonstream");
    assert_eq!(v["stop_reason"], "tool_use");
    let c = v["content"].as_array().unwrap();
    assert_eq!(c.len(), 2, "the reasoning item is dropped");
    assert_eq!(c[0], json!({"type": "text", "text": "Looking it up."}));
    assert_eq!(c[1]["id"], "call_9");
    assert_eq!(c[1]["name"], "get_weather");
    assert_eq!(c[1]["input"], json!({"location": "Boston, MA"}));
    assert_eq!(v["usage"]["input_tokens"], 44);
    assert_eq!(v["usage"]["cache_read_input_tokens"], 256);
    assert_eq!(v["usage"]["output_tokens"], 40);
    assert!(r.notes.contains(Note::ThinkingOutputDropped));
}

#[test]
fn messages_answer_to_chat() {
    let (v, r) = reply(Api::Anthropic, Api::OpenAi, "messages/response_tools.json");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["created"], 1_700_000_000);
    assert_eq!(v["model"], "claude-sonnet-4-5-20250929");
    let ch = &v["choices"][0];
    assert_eq!(ch["index"], 0);
    assert_eq!(ch["finish_reason"], "tool_calls");
    assert_eq!(ch["message"]["role"], "assistant");
    assert_eq!(
        ch["message"]["content"],
        "I'll check the weather in both cities."
    );
    let calls = ch["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(calls[0]["type"], "function");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 6095, "completion_tokens": 503, "total_tokens": 6598, "prompt_tokens_details": {"cached_tokens": 3000}})
    );
    assert!(!String::from_utf8_lossy(&r.body).contains("sig=="));
    assert!(r.notes.contains(Note::ThinkingOutputDropped));
    let (v, _) = reply(
        Api::Anthropic,
        Api::OpenAi,
        "messages/response_max_tokens.json",
    );
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["choices"][0]["message"]["content"], "Partial");
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
    let (v, _) = reply(
        Api::Anthropic,
        Api::OpenAi,
        "messages/response_stop_sequence.json",
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[test]
fn round_trip_of_an_answer_keeps_its_meaning() {
    // Anthropic → Chat → Anthropic: the content, stop and usage survive.
    let (chat, _) = reply(Api::Anthropic, Api::OpenAi, "messages/response_tools.json");
    let back = translate_response(
        Api::OpenAi,
        Api::Anthropic,
        &serde_json::to_vec(&chat).unwrap(),
        &ReplyContext::default(),
    )
    .unwrap();
    let back: Value = serde_json::from_slice(&back.body).unwrap();
    let orig: Value = serde_json::from_str(&corpus("messages/response_tools.json")).unwrap();
    assert_eq!(back["stop_reason"], orig["stop_reason"]);
    assert_eq!(back["content"][0]["text"], orig["content"][1]["text"]);
    assert_eq!(back["content"][1]["input"], orig["content"][2]["input"]);
    assert_eq!(back["content"][2]["id"], orig["content"][3]["id"]);
    // Cache writes have no Chat field: they come back as plain input.
    assert_eq!(back["usage"]["cache_read_input_tokens"], 3000);
    assert_eq!(back["usage"]["input_tokens"], 2095 + 1000);
    assert_eq!(back["usage"]["output_tokens"], 503);
}

#[test]
fn unreadable_answers_are_errors_not_panics() {
    let ctx = ReplyContext::default();
    for (up, body) in [
        (Api::OpenAi, "{}"),
        (Api::OpenAi, "not json"),
        (Api::Anthropic, "[1]"),
        (
            Api::OpenAiResponses,
            r#"{"status":"failed","error":{"code":"server_error","message":"x"}}"#,
        ),
        (
            Api::OpenAi,
            r#"{"choices":[{"message":{"tool_calls":[{"id":"c","function":{"name":"f","arguments":"[1"}}]}}]}"#,
        ),
    ] {
        assert!(
            translate_response(up, Api::Anthropic, body.as_bytes(), &ctx).is_err(),
            "{body}"
        );
    }
}

#[test]
fn plans_per_attempt() {
    assert_eq!(
        plan(Api::Anthropic, Api::Anthropic, "/v1/messages"),
        Plan::Passthrough
    );
    assert_eq!(
        plan(Api::Anthropic, Api::OpenAi, "/v1/messages"),
        Plan::Translate {
            path: "/v1/chat/completions"
        }
    );
    assert_eq!(
        plan(Api::Anthropic, Api::OpenAiResponses, "/team/v1/messages"),
        Plan::Translate {
            path: "/v1/responses"
        }
    );
    assert_eq!(
        plan(Api::OpenAi, Api::Anthropic, "/v1/chat/completions"),
        Plan::Translate {
            path: "/v1/messages"
        }
    );
    let Plan::Refuse(e) = plan(Api::Anthropic, Api::OpenAi, "/v1/messages/count_tokens") else {
        panic!()
    };
    assert!(e.0.contains("count_tokens"));
    assert!(matches!(
        plan(Api::OpenAi, Api::OpenAiResponses, "/v1/chat/completions"),
        Plan::Refuse(_)
    ));
    assert_eq!(
        plan(Api::Anthropic, Api::Anthropic, "/v1/messages/count_tokens"),
        Plan::Passthrough
    );
}
