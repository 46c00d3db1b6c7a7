//! Stream translation over the reference corpus: every translated stream
//! is checked by a strict validator of the client's dialect, reassembled
//! the way an SDK would, and compared with the provider's stream
//! reassembled (text, each tool call's argument deltas one for one, stop
//! reason, usage). Property tests: chunk boundaries never change the
//! output, and generated streams (any fragmentation of text and arguments,
//! parallel and interleaved calls) come out well-formed and complete.

use super::*;
use crate::sse::{self, SseFramer};
use crate::translate::reply;
use crate::translate::tests::corpus;
use bytes::Bytes;
use proptest::prelude::*;
use serde_json::Value;

#[derive(Debug, Default, PartialEq, Clone)]
struct Call {
    id: String,
    name: String,
    fragments: Vec<String>,
}

/// A stream as an SDK would rebuild it, in neutral terms.
#[derive(Debug, Default, PartialEq, Clone)]
struct Assembled {
    text: String,
    calls: Vec<Call>,
    stop: Option<StopReason>,
    usage: Option<Usage>,
    /// The error type, in the stream's own dialect.
    error: Option<String>,
}

fn events(b: &[u8]) -> Vec<(Option<String>, String)> {
    sse::events(b)
        .map(|(n, d)| (n.map(str::to_owned), d))
        .collect()
}

fn j(d: &str) -> Value {
    serde_json::from_str(d).unwrap_or_else(|e| panic!("not JSON ({e}): {d}"))
}

// ---- provider streams, reassembled

fn chat_upstream(b: &[u8]) -> Assembled {
    let mut a = Assembled::default();
    let mut idx: Vec<u64> = Vec::new();
    let mut refused = false;
    for (_, d) in events(b) {
        if d == "[DONE]" {
            continue;
        }
        let v = j(&d);
        if let Some(e) = v.get("error") {
            a.error = Some(e["type"].as_str().unwrap_or("").to_owned());
            continue;
        }
        for ch in v["choices"].as_array().unwrap() {
            let delta = &ch["delta"];
            if let Some(t) = delta["content"].as_str() {
                a.text.push_str(t);
            }
            if let Some(t) = delta["refusal"].as_str().filter(|t| !t.is_empty()) {
                refused = true;
                a.text.push_str(t);
            }
            for tc in delta["tool_calls"].as_array().into_iter().flatten() {
                let i = tc["index"].as_u64().unwrap();
                let pos = match idx.iter().position(|x| *x == i) {
                    Some(p) => p,
                    None => {
                        idx.push(i);
                        a.calls.push(Call {
                            id: tc["id"].as_str().unwrap().into(),
                            name: tc["function"]["name"].as_str().unwrap().into(),
                            ..Call::default()
                        });
                        a.calls.len() - 1
                    }
                };
                if let Some(f) = tc["function"]["arguments"]
                    .as_str()
                    .filter(|f| !f.is_empty())
                {
                    a.calls[pos].fragments.push(f.into());
                }
            }
            if let Some(r) = ch["finish_reason"].as_str() {
                a.stop = Some(if refused {
                    StopReason::Refusal
                } else {
                    StopReason::from_chat(r)
                });
            }
        }
        if v["usage"].is_object() {
            let u: crate::translate::chat::Usage =
                serde_json::from_value(v["usage"].clone()).unwrap();
            a.usage = Some(reply::from_chat(&u));
        }
    }
    a
}

fn responses_upstream(b: &[u8]) -> Assembled {
    let mut a = Assembled::default();
    let mut idx: Vec<u64> = Vec::new();
    let mut streamed: Vec<u64> = Vec::new();
    for (_, d) in events(b) {
        let v = j(&d);
        let oi = v["output_index"].as_u64().unwrap_or(0);
        match v["type"].as_str().unwrap() {
            "response.output_text.delta" | "response.refusal.delta" => {
                a.text.push_str(v["delta"].as_str().unwrap())
            }
            "response.output_item.added" if v["item"]["type"] == "function_call" => {
                idx.push(oi);
                a.calls.push(Call {
                    id: v["item"]["call_id"].as_str().unwrap().into(),
                    name: v["item"]["name"].as_str().unwrap().into(),
                    ..Call::default()
                });
            }
            "response.function_call_arguments.delta" => {
                streamed.push(oi);
                let p = idx.iter().position(|x| *x == oi).unwrap();
                a.calls[p]
                    .fragments
                    .push(v["delta"].as_str().unwrap().into());
            }
            "response.completed" | "response.incomplete" => {
                let u: crate::translate::responses::Usage =
                    serde_json::from_value(v["response"]["usage"].clone()).unwrap();
                a.usage = Some(reply::from_responses(&u));
                a.stop = Some(StopReason::from_responses(
                    v["response"]["incomplete_details"]["reason"].as_str(),
                    !a.calls.is_empty(),
                ));
            }
            "error" => a.error = Some(v["code"].as_str().unwrap().into()),
            "response.failed" => {
                a.error = Some(v["response"]["error"]["code"].as_str().unwrap().into())
            }
            _ => {}
        }
    }
    a
}

fn messages_upstream(b: &[u8]) -> Assembled {
    let mut a = Assembled::default();
    let mut u = Usage::default();
    let mut tool_at: Vec<(u64, usize)> = Vec::new();
    for (_, d) in events(b) {
        let v = j(&d);
        match v["type"].as_str().unwrap() {
            "message_start" => {
                let m = &v["message"]["usage"];
                u.input = m["input_tokens"].as_u64().unwrap_or(0);
                u.cache_read = m["cache_read_input_tokens"].as_u64().unwrap_or(0);
                u.cache_write = m["cache_creation_input_tokens"].as_u64().unwrap_or(0);
            }
            "content_block_start" if v["content_block"]["type"] == "tool_use" => {
                tool_at.push((v["index"].as_u64().unwrap(), a.calls.len()));
                a.calls.push(Call {
                    id: v["content_block"]["id"].as_str().unwrap().into(),
                    name: v["content_block"]["name"].as_str().unwrap().into(),
                    ..Call::default()
                });
            }
            "content_block_delta" => match v["delta"]["type"].as_str().unwrap() {
                "text_delta" => a.text.push_str(v["delta"]["text"].as_str().unwrap()),
                "input_json_delta" => {
                    let f = v["delta"]["partial_json"].as_str().unwrap();
                    if !f.is_empty() {
                        let i = v["index"].as_u64().unwrap();
                        let p = tool_at.iter().find(|(k, _)| *k == i).unwrap().1;
                        a.calls[p].fragments.push(f.into());
                    }
                }
                _ => {}
            },
            "message_delta" => {
                let m = &v["usage"];
                u.output = m["output_tokens"].as_u64().unwrap_or(u.output);
                u.input = m["input_tokens"].as_u64().unwrap_or(u.input);
                a.stop = v["delta"]["stop_reason"]
                    .as_str()
                    .map(StopReason::from_anthropic);
                a.usage = Some(u);
            }
            "error" => a.error = Some(v["error"]["type"].as_str().unwrap().into()),
            _ => {}
        }
    }
    a
}

// ---- client streams: strict validators that reassemble

/// Anthropic's order: message_start, (content_block_start, deltas,
/// content_block_stop)*, message_delta, message_stop; pings anywhere after
/// the start; an error event ends the stream.
fn messages_client(b: &[u8]) -> Assembled {
    let evs = events(b);
    let mut a = Assembled::default();
    let mut it = evs.iter().peekable();
    let (n, d) = it.next().expect("empty stream");
    let v = j(d);
    if n.as_deref() == Some("error") {
        assert_eq!(v["type"], "error");
        assert!(it.next().is_none(), "events after an error");
        a.error = Some(v["error"]["type"].as_str().unwrap().into());
        return a;
    }
    assert_eq!(n.as_deref(), Some("message_start"));
    assert_eq!(v["type"], "message_start");
    let m = &v["message"];
    assert_eq!(m["type"], "message");
    assert_eq!(m["role"], "assistant");
    assert!(m["id"].is_string() && m["model"].is_string());
    assert_eq!(m["content"], serde_json::json!([]));
    assert!(m["usage"]["input_tokens"].is_u64());
    let mut next_index = 0;
    let mut open: Option<(u64, String)> = None;
    let mut saw_delta = false;
    let mut done = false;
    for (n, d) in it {
        assert!(!done, "an event after message_stop: {d}");
        let v = j(d);
        let ty = v["type"].as_str().unwrap().to_owned();
        assert_eq!(
            n.as_deref(),
            Some(ty.as_str()),
            "event name and type differ"
        );
        match ty.as_str() {
            "ping" => {}
            "content_block_start" => {
                assert!(
                    open.is_none() && !saw_delta,
                    "block opened inside a block or after message_delta"
                );
                assert_eq!(v["index"].as_u64(), Some(next_index));
                let cb = &v["content_block"];
                let kind = cb["type"].as_str().unwrap().to_owned();
                match kind.as_str() {
                    "text" => assert_eq!(cb["text"], ""),
                    "tool_use" => {
                        assert_eq!(cb["input"], serde_json::json!({}));
                        a.calls.push(Call {
                            id: cb["id"].as_str().unwrap().into(),
                            name: cb["name"].as_str().unwrap().into(),
                            ..Call::default()
                        });
                    }
                    other => panic!("unexpected block {other}"),
                }
                open = Some((next_index, kind));
            }
            "content_block_delta" => {
                let (i, kind) = open.as_ref().expect("delta outside a block");
                assert_eq!(v["index"].as_u64(), Some(*i));
                match (kind.as_str(), v["delta"]["type"].as_str().unwrap()) {
                    ("text", "text_delta") => a.text.push_str(v["delta"]["text"].as_str().unwrap()),
                    ("tool_use", "input_json_delta") => a
                        .calls
                        .last_mut()
                        .unwrap()
                        .fragments
                        .push(v["delta"]["partial_json"].as_str().unwrap().into()),
                    other => panic!("delta {other:?} in the wrong block"),
                }
            }
            "content_block_stop" => {
                let (i, kind) = open.take().expect("stop outside a block");
                assert_eq!(v["index"].as_u64(), Some(i));
                if kind == "tool_use" {
                    let args: String = a.calls.last().unwrap().fragments.concat();
                    let parsed: Value =
                        serde_json::from_str(if args.is_empty() { "{}" } else { &args })
                            .unwrap_or_else(|e| panic!("tool input is not JSON ({e}): {args}"));
                    assert!(parsed.is_object());
                }
                next_index += 1;
            }
            "message_delta" => {
                assert!(
                    open.is_none() && !saw_delta,
                    "message_delta inside a block, or twice"
                );
                saw_delta = true;
                a.stop = Some(StopReason::from_anthropic(
                    v["delta"]["stop_reason"].as_str().unwrap(),
                ));
                assert!(v["delta"]["stop_sequence"].is_null());
                let u = &v["usage"];
                a.usage = Some(Usage {
                    input: u["input_tokens"].as_u64().unwrap(),
                    output: u["output_tokens"].as_u64().unwrap(),
                    cache_read: u["cache_read_input_tokens"].as_u64().unwrap(),
                    cache_write: u["cache_creation_input_tokens"].as_u64().unwrap(),
                });
            }
            "message_stop" => {
                assert!(saw_delta, "message_stop without message_delta");
                done = true;
            }
            "error" => {
                a.error = Some(v["error"]["type"].as_str().unwrap().into());
                done = true;
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert!(done, "the stream did not end");
    a
}

/// Chat chunks: a role chunk first, one id/model/created throughout, tool
/// calls opened with id, type and name at the next index, one finish
/// reason, then the usage chunk if asked for, then [DONE].
fn chat_client(b: &[u8], include_usage: bool) -> Assembled {
    let evs = events(b);
    let mut a = Assembled::default();
    let mut first: Option<Value> = None;
    let mut finished = false;
    let mut usage_seen = false;
    let mut done = false;
    let mut current_tool: Option<u64> = None;
    for (n, d) in &evs {
        assert!(n.is_none(), "chat events have no names");
        assert!(!done, "data after [DONE]");
        if d == "[DONE]" {
            assert!(finished, "[DONE] before a finish reason");
            assert_eq!(usage_seen, include_usage);
            done = true;
            continue;
        }
        let v = j(d);
        if let Some(e) = v.get("error") {
            assert!(e["message"].is_string() && e["type"].is_string());
            a.error = Some(e["type"].as_str().unwrap().into());
            done = true;
            continue;
        }
        assert_eq!(v["object"], "chat.completion.chunk");
        assert!(v["created"].is_u64());
        let f = first.get_or_insert_with(|| {
            assert_eq!(
                v["choices"][0]["delta"]["role"], "assistant",
                "first chunk: {v}"
            );
            v.clone()
        });
        assert_eq!(v["id"], f["id"]);
        assert_eq!(v["model"], f["model"]);
        let choices = v["choices"].as_array().unwrap();
        if choices.is_empty() {
            assert!(
                finished && !usage_seen && include_usage,
                "usage chunk out of place"
            );
            usage_seen = true;
            let u = &v["usage"];
            let cached = u["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap();
            let prompt = u["prompt_tokens"].as_u64().unwrap();
            let completion = u["completion_tokens"].as_u64().unwrap();
            assert_eq!(u["total_tokens"].as_u64().unwrap(), prompt + completion);
            a.usage = Some(Usage {
                input: prompt - cached,
                output: completion,
                cache_read: cached,
                cache_write: 0,
            });
            continue;
        }
        assert!(!finished, "a chunk after the finish reason");
        assert_eq!(choices.len(), 1);
        assert_eq!(choices[0]["index"], 0);
        let delta = &choices[0]["delta"];
        if let Some(t) = delta["content"].as_str() {
            a.text.push_str(t);
        }
        for tc in delta["tool_calls"].as_array().into_iter().flatten() {
            let i = tc["index"].as_u64().unwrap();
            if tc.get("id").is_some() {
                assert_eq!(i, a.calls.len() as u64, "tool calls open at the next index");
                assert_eq!(tc["type"], "function");
                current_tool = Some(i);
                a.calls.push(Call {
                    id: tc["id"].as_str().unwrap().into(),
                    name: tc["function"]["name"].as_str().unwrap().into(),
                    ..Call::default()
                });
            } else {
                assert_eq!(
                    Some(i),
                    current_tool,
                    "arguments for a call that is not the open one"
                );
            }
            if let Some(f) = tc["function"]["arguments"]
                .as_str()
                .filter(|f| !f.is_empty())
            {
                a.calls[i as usize].fragments.push(f.into());
            }
        }
        if let Some(r) = choices[0]["finish_reason"].as_str() {
            finished = true;
            a.stop = Some(StopReason::from_chat(r));
        }
    }
    if a.error.is_none() {
        assert!(done, "no [DONE]");
    }
    for c in &a.calls {
        let args = c.fragments.concat();
        let v: Value = serde_json::from_str(if args.is_empty() { "{}" } else { &args }).unwrap();
        assert!(v.is_object());
    }
    a
}

// ---- running a stream the way the request path will

fn run(
    upstream: Api,
    client: Api,
    ctx: &ReplyContext,
    bytes: &[u8],
    sizes: &[usize],
) -> (Vec<u8>, StreamEnd, StreamSummary) {
    let mut framer = SseFramer::new();
    let mut t = StreamTranslator::new(upstream, client, ctx);
    let mut out = BytesMut::new();
    let feed = |framed: Bytes, t: &mut StreamTranslator, out: &mut BytesMut| {
        for (name, data) in sse::events(&framed) {
            t.push(name, &data, out);
        }
    };
    let mut rest = bytes;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes
            .get(i)
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        i += 1;
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        if let Some(f) = framer.push(Bytes::copy_from_slice(chunk)) {
            feed(f, &mut t, &mut out);
        }
    }
    if let Some(f) = framer.finish() {
        feed(f, &mut t, &mut out);
    }
    let end = t.finish(&mut out);
    (out.to_vec(), end, t.summary().clone())
}

fn ctx(include_usage: bool) -> ReplyContext {
    ReplyContext {
        stream: true,
        include_usage,
        created: 1_700_000_000,
    }
}

fn upstream_assembled(api: Api, b: &[u8]) -> Assembled {
    match api {
        Api::Anthropic => messages_upstream(b),
        Api::OpenAi => chat_upstream(b),
        Api::OpenAiResponses => responses_upstream(b),
    }
}

/// Translate, validate, and compare with the provider's stream.
fn check(
    upstream: Api,
    client: Api,
    path: &str,
    include_usage: bool,
) -> (Assembled, StreamEnd, StreamSummary, Vec<u8>) {
    let input = corpus(path);
    let (out, end, summary) = run(upstream, client, &ctx(include_usage), input.as_bytes(), &[]);
    let got = match client {
        Api::Anthropic => messages_client(&out),
        _ => chat_client(&out, include_usage && end == StreamEnd::Complete),
    };
    let want = upstream_assembled(upstream, input.as_bytes());
    assert_eq!(got.text, want.text, "{path}");
    assert_eq!(got.calls, want.calls, "{path}: tool calls, delta for delta");
    if want.error.is_none() {
        assert_eq!(end, StreamEnd::Complete, "{path}");
        match client {
            Api::Anthropic => {
                assert_eq!(got.stop, want.stop, "{path}");
                // A provider that sent no usage: the client still gets counts.
                assert_eq!(
                    got.usage.unwrap_or_default(),
                    want.usage.unwrap_or_default(),
                    "{path}"
                );
            }
            _ => {
                assert_eq!(
                    got.stop.map(StopReason::chat),
                    want.stop.map(StopReason::chat)
                );
                if include_usage {
                    // Chat has no cache-write field: writes count as prompt.
                    let w = want.usage.unwrap();
                    let u = got.usage.unwrap();
                    assert_eq!(u.input, w.input + w.cache_write, "{path}");
                    assert_eq!((u.output, u.cache_read), (w.output, w.cache_read), "{path}");
                }
            }
        }
        assert_eq!(summary.usage, want.usage.unwrap_or_default(), "{path}");
        assert_eq!(summary.stop, want.stop);
    } else {
        assert_eq!(end, StreamEnd::Failed, "{path}");
    }
    (got, end, summary, out)
}

const TO_MESSAGES: [(Api, &str); 11] = [
    (Api::OpenAi, "chat/stream_text.sse"),
    (Api::OpenAi, "chat/stream_parallel_tools.sse"),
    (Api::OpenAi, "chat/stream_interleaved_tools.sse"),
    (Api::OpenAi, "chat/stream_refusal.sse"),
    (Api::OpenAi, "chat/stream_length.sse"),
    (Api::OpenAi, "chat/stream_error.sse"),
    (Api::OpenAiResponses, "responses/stream_text.sse"),
    (Api::OpenAiResponses, "responses/stream_tools.sse"),
    (Api::OpenAiResponses, "responses/stream_reasoning.sse"),
    (Api::OpenAiResponses, "responses/stream_incomplete.sse"),
    (Api::OpenAiResponses, "responses/stream_error.sse"),
];

const TO_CHAT: [&str; 6] = [
    "messages/stream_text.sse",
    "messages/stream_tools.sse",
    "messages/stream_thinking.sse",
    "messages/stream_max_tokens.sse",
    "messages/stream_refusal.sse",
    "messages/stream_error.sse",
];

#[test]
fn every_corpus_stream_translates_to_a_valid_messages_stream() {
    for (up, path) in TO_MESSAGES {
        check(up, Api::Anthropic, path, true);
    }
    check(
        Api::OpenAiResponses,
        Api::Anthropic,
        "responses/stream_failed.sse",
        true,
    );
}

#[test]
fn every_corpus_stream_translates_to_a_valid_chat_stream() {
    for path in TO_CHAT {
        check(Api::Anthropic, Api::OpenAi, path, true);
        check(Api::Anthropic, Api::OpenAi, path, false);
    }
}

#[test]
fn chat_text_stream_fields() {
    let (a, _, s, out) = check(Api::OpenAi, Api::Anthropic, "chat/stream_text.sse", true);
    assert_eq!(a.text, "Hello there, \"friend\"\n!");
    assert_eq!(a.stop, Some(StopReason::EndTurn));
    assert_eq!(
        a.usage,
        Some(Usage {
            input: 86,
            output: 300,
            cache_read: 1920,
            cache_write: 0
        })
    );
    assert_eq!(s.model.as_deref(), Some("gpt-4o-2024-08-06"));
    let first = &events(&out)[0].1;
    assert_eq!(j(first)["message"]["id"], "chatcmpl-1");
    // One message_start, one message_stop.
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches("event: message_start").count(), 1);
    assert_eq!(text.matches("event: message_stop").count(), 1);
}

#[test]
fn parallel_calls_stay_apart_and_in_order() {
    let (a, ..) = check(
        Api::OpenAi,
        Api::Anthropic,
        "chat/stream_parallel_tools.sse",
        true,
    );
    assert_eq!(a.text, "Checking both.");
    assert_eq!(a.calls.len(), 2);
    assert_eq!(a.calls[0].id, "call_DdmO9pD3xa9XTPNJ32zg2hcA");
    assert_eq!(a.calls[0].fragments, ["{\"lo", "cation\": \"Pa", "ris\"}"]);
    assert_eq!(a.calls[1].name, "get_time");
    assert_eq!(a.stop, Some(StopReason::ToolUse));
    // Interleaved arguments: each call is still one block, whole and in order.
    let (a, _, _, out) = check(
        Api::OpenAi,
        Api::Anthropic,
        "chat/stream_interleaved_tools.sse",
        true,
    );
    assert_eq!(a.calls[0].fragments, ["{\"x\": ", "1}"]);
    assert_eq!(a.calls[1].fragments, ["{\"y\"", ": 2", "}"]);
    assert_eq!(a.text, "late text");
    let starts: Vec<Value> = events(&out)
        .into_iter()
        .filter(|(n, _)| n.as_deref() == Some("content_block_start"))
        .map(|(_, d)| j(&d)["content_block"]["type"].clone())
        .collect();
    assert_eq!(starts, ["tool_use", "tool_use", "text"]);
}

#[test]
fn responses_streams_fields() {
    let (a, _, s, _) = check(
        Api::OpenAiResponses,
        Api::Anthropic,
        "responses/stream_text.sse",
        true,
    );
    assert_eq!(a.text, "Hi there \u{e9}\n");
    assert_eq!(
        a.usage,
        Some(Usage {
            input: 117,
            output: 5,
            cache_read: 1920,
            cache_write: 0
        })
    );
    assert_eq!(s.model.as_deref(), Some("gpt-4.1-2025-04-14"));
    let (a, ..) = check(
        Api::OpenAiResponses,
        Api::Anthropic,
        "responses/stream_tools.sse",
        true,
    );
    assert_eq!(a.calls[0].id, "call_weather");
    assert_eq!(a.calls[1].fragments, ["{\"timezone\":\"Asia/Tokyo\"}"]);
    assert_eq!(a.stop, Some(StopReason::ToolUse));
    let (a, _, s, out) = check(
        Api::OpenAiResponses,
        Api::Anthropic,
        "responses/stream_reasoning.sse",
        true,
    );
    assert_eq!(a.text, "There are 3.");
    assert!(!String::from_utf8_lossy(&out).contains("Counting letters"));
    assert!(s
        .notes
        .contains(crate::translate::Note::ThinkingOutputDropped));
    let (a, ..) = check(
        Api::OpenAiResponses,
        Api::Anthropic,
        "responses/stream_incomplete.sse",
        true,
    );
    assert_eq!(a.stop, Some(StopReason::MaxTokens));
}

#[test]
fn stream_errors_keep_their_meaning() {
    let (a, _, s, _) = check(Api::OpenAi, Api::Anthropic, "chat/stream_error.sse", true);
    assert_eq!(a.error.as_deref(), Some("api_error"));
    assert_eq!(s.error, Some(ErrorKind::Server));
    let (a, ..) = check(
        Api::OpenAiResponses,
        Api::Anthropic,
        "responses/stream_error.sse",
        true,
    );
    assert_eq!(a.error.as_deref(), Some("rate_limit_error"));
    let (a, ..) = check(
        Api::OpenAiResponses,
        Api::Anthropic,
        "responses/stream_failed.sse",
        true,
    );
    assert_eq!(a.error.as_deref(), Some("api_error"));
    let (a, _, s, out) = check(
        Api::Anthropic,
        Api::OpenAi,
        "messages/stream_error.sse",
        true,
    );
    assert_eq!(a.error.as_deref(), Some("server_error"));
    assert_eq!(s.error, Some(ErrorKind::Overloaded));
    assert!(String::from_utf8_lossy(&out).contains("server_is_overloaded"));
    // The translated stream classifies like a native one would.
    let last = events(&out).pop().unwrap();
    assert_eq!(
        crate::sse::kind::classify(Api::OpenAi, last.0.as_deref(), &last.1),
        crate::sse::kind::EventKind::Error
    );
}

#[test]
fn messages_streams_to_chat_fields() {
    let (a, _, s, out) = check(
        Api::Anthropic,
        Api::OpenAi,
        "messages/stream_text.sse",
        true,
    );
    assert_eq!(a.text, "Hello! \"quoted\"\n");
    assert_eq!(
        a.usage,
        Some(Usage {
            input: 125,
            output: 15,
            cache_read: 2000,
            cache_write: 0
        })
    );
    assert_eq!(
        s.usage,
        Usage {
            input: 25,
            output: 15,
            cache_read: 2000,
            cache_write: 100
        }
    );
    let first = j(&events(&out)[0].1);
    assert_eq!(first["id"], "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY");
    assert_eq!(first["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(first["created"], 1_700_000_000);
    assert!(String::from_utf8_lossy(&out).contains(": ping\n\n"));
    let (a, ..) = check(
        Api::Anthropic,
        Api::OpenAi,
        "messages/stream_tools.sse",
        false,
    );
    assert_eq!(a.calls.len(), 2);
    assert_eq!(
        a.calls[0].fragments,
        [
            "{\"location\":",
            " \"San Francisco, CA\"",
            ", \"unit\": \"fahrenheit\"}"
        ]
    );
    assert_eq!(a.stop, Some(StopReason::ToolUse));
    let (a, _, _, out) = check(
        Api::Anthropic,
        Api::OpenAi,
        "messages/stream_thinking.sse",
        true,
    );
    assert_eq!(a.text, "27 * 453 = 12,231");
    let text = String::from_utf8_lossy(&out);
    assert!(
        !text.contains("step by step") && !text.contains("EqQBCg"),
        "{text}"
    );
    let (a, ..) = check(
        Api::Anthropic,
        Api::OpenAi,
        "messages/stream_refusal.sse",
        true,
    );
    assert_eq!(a.stop, Some(StopReason::Refusal));
    let (a, ..) = check(
        Api::Anthropic,
        Api::OpenAi,
        "messages/stream_max_tokens.sse",
        true,
    );
    assert_eq!(a.stop, Some(StopReason::MaxTokens));
}

#[test]
fn a_cut_stream_is_truncated_not_closed() {
    let full = corpus("messages/stream_tools.sse");
    let cut = &full[..full
        .find("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}")
        .unwrap()];
    let (out, end, _) = run(Api::Anthropic, Api::OpenAi, &ctx(true), cut.as_bytes(), &[]);
    assert_eq!(end, StreamEnd::Truncated);
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("[DONE]") && !text.contains("finish_reason\":\"tool"));
    // A Chat provider that said how it stopped but left out [DONE].
    let chat = corpus("chat/stream_length.sse").replace("data: [DONE]\n\n", "");
    let (out, end, _) = run(
        Api::OpenAi,
        Api::Anthropic,
        &ctx(true),
        chat.as_bytes(),
        &[],
    );
    assert_eq!(end, StreamEnd::Complete);
    messages_client(&out);
    // Nothing but a start: truncated.
    let (out, end, _) = run(
        Api::OpenAi,
        Api::Anthropic,
        &ctx(true),
        corpus("chat/stream_text.sse")
            .split("\n\n")
            .next()
            .unwrap()
            .as_bytes(),
        &[],
    );
    assert_eq!(end, StreamEnd::Truncated);
    assert!(!String::from_utf8(out).unwrap().contains("message_stop"));
}

#[test]
fn late_arguments_for_a_finished_call_are_an_error_not_a_merge() {
    let c = r#""object":"chat.completion.chunk","created":1,"model":"m""#;
    let s = format!(
        "data: {{\"id\":\"x\",{c},\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":0,\"id\":\"a\",\"function\":{{\"name\":\"f\",\"arguments\":\"{{}}\"}}}}]}}}}]}}\n\n\
         data: {{\"id\":\"x\",{c},\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":1,\"id\":\"b\",\"function\":{{\"name\":\"g\",\"arguments\":\"{{}}\"}}}}]}}}}]}}\n\n\
         data: {{\"id\":\"x\",{c},\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":\"x\"}}}}]}}}}]}}\n\n"
    );
    let (out, end, summary) = run(Api::OpenAi, Api::Anthropic, &ctx(true), s.as_bytes(), &[]);
    assert_eq!(end, StreamEnd::Failed);
    assert_eq!(summary.error, Some(ErrorKind::Server));
    let a = messages_client(&out);
    assert_eq!(a.error.as_deref(), Some("api_error"));
}

// ---- properties

fn all_corpus() -> Vec<(Api, Api, &'static str)> {
    let mut v: Vec<_> = TO_MESSAGES
        .iter()
        .map(|(u, p)| (*u, Api::Anthropic, *p))
        .collect();
    v.extend(TO_CHAT.iter().map(|p| (Api::Anthropic, Api::OpenAi, *p)));
    v
}

/// A generated Chat stream: text pieces and tool calls whose arguments are
/// cut anywhere, the calls' chunks optionally interleaved.
#[derive(Debug, Clone)]
struct GenStream {
    text: Vec<String>,
    calls: Vec<Vec<String>>,
    interleave: Vec<usize>,
    text_first: bool,
}

fn split_at_points(s: &str, cuts: &[usize]) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (chars.len() + 1)).collect();
    points.push(0);
    points.push(chars.len());
    points.sort_unstable();
    points.dedup();
    points
        .windows(2)
        .map(|w| chars[w[0]..w[1]].iter().collect::<String>())
        .filter(|s| !s.is_empty())
        .collect()
}

fn gen_stream() -> impl Strategy<Value = GenStream> {
    let args = (
        prop::collection::vec(("[a-z]{1,6}", "[ -~é\"\\\\{}\\[\\]]{0,12}"), 0..4),
        prop::collection::vec(0usize..64, 0..6),
    )
        .prop_map(|(pairs, cuts)| {
            let obj: serde_json::Map<String, Value> = pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            let s = Value::Object(obj).to_string();
            split_at_points(&s, &cuts)
        });
    (
        prop::collection::vec("[ -~é\n]{1,8}", 0..5),
        prop::collection::vec(args, 0..4),
        prop::collection::vec(0usize..4, 0..24),
        any::<bool>(),
    )
        .prop_map(|(text, calls, interleave, text_first)| GenStream {
            text,
            calls,
            interleave,
            text_first,
        })
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    let v = serde_json::json!({
        "id": "chatcmpl-g", "object": "chat.completion.chunk", "created": 1, "model": "gpt-g",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
    });
    format!("data: {v}\n\n")
}

impl GenStream {
    fn sse(&self) -> String {
        let mut s = chunk(
            serde_json::json!({"role": "assistant", "content": ""}),
            None,
        );
        let text = |s: &mut String| {
            for t in &self.text {
                s.push_str(&chunk(serde_json::json!({"content": t}), None));
            }
        };
        if self.text_first {
            text(&mut s);
        }
        // Each call: an opening delta, then its fragments; calls advance
        // in the order `interleave` picks (in order when it runs out).
        let mut next: Vec<usize> = vec![0; self.calls.len()];
        let mut order: Vec<usize> = self
            .interleave
            .iter()
            .filter(|_| !self.calls.is_empty())
            .map(|i| i % self.calls.len())
            .collect();
        for (i, c) in self.calls.iter().enumerate() {
            order.extend(std::iter::repeat_n(i, c.len() + 1));
        }
        let mut opened = 0;
        for i in order {
            // Calls open in index order, as every vendor does.
            let i = if next[i] == 0 {
                opened.min(self.calls.len() - 1)
            } else {
                i
            };
            let c = &self.calls[i];
            if next[i] > c.len() {
                continue;
            }
            let delta = if next[i] == 0 {
                opened += 1;
                serde_json::json!({"tool_calls": [{"index": i, "id": format!("call_{i}"), "type": "function", "function": {"name": format!("f{i}"), "arguments": ""}}]})
            } else {
                serde_json::json!({"tool_calls": [{"index": i, "function": {"arguments": c[next[i] - 1]}}]})
            };
            next[i] += 1;
            s.push_str(&chunk(delta, None));
        }
        if !self.text_first {
            text(&mut s);
        }
        let finish = if self.calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        };
        s.push_str(&chunk(serde_json::json!({}), Some(finish)));
        s.push_str("data: {\"id\":\"chatcmpl-g\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-g\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13,\"prompt_tokens_details\":{\"cached_tokens\":2}}}\n\ndata: [DONE]\n\n");
        s
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn chunk_boundaries_do_not_change_the_output(
        which in 0usize..17,
        sizes in prop::collection::vec(1usize..80, 0..200),
    ) {
        let all = all_corpus();
        let (up, client, path) = all[which % all.len()];
        let input = corpus(path);
        let (whole, e1, s1) = run(up, client, &ctx(true), input.as_bytes(), &[]);
        let (cut, e2, s2) = run(up, client, &ctx(true), input.as_bytes(), &sizes);
        prop_assert_eq!(&whole, &cut, "{}", path);
        prop_assert_eq!(e1, e2);
        prop_assert_eq!(s1, s2);
    }

    #[test]
    fn generated_chat_streams_translate_whole_and_well_formed(g in gen_stream(), sizes in prop::collection::vec(1usize..50, 0..100)) {
        let input = g.sse();
        let (out, end, _) = run(Api::OpenAi, Api::Anthropic, &ctx(true), input.as_bytes(), &sizes);
        prop_assert_eq!(end, StreamEnd::Complete);
        let got = messages_client(&out);
        let want = chat_upstream(input.as_bytes());
        prop_assert_eq!(&got.text, &want.text);
        prop_assert_eq!(&got.calls, &want.calls);
        prop_assert_eq!(got.stop, want.stop);
        prop_assert_eq!(got.usage, want.usage);
        // And back: the Messages stream, translated for a Chat client.
        let (chat, end, _) = run(Api::Anthropic, Api::OpenAi, &ctx(true), &out, &sizes);
        prop_assert_eq!(end, StreamEnd::Complete);
        let round = chat_client(&chat, true);
        prop_assert_eq!(&round.text, &want.text);
        prop_assert_eq!(&round.calls, &want.calls);
        prop_assert_eq!(round.stop, want.stop);
        prop_assert_eq!(round.usage, want.usage);
    }
}

/// Writes every translated corpus stream (and JSON answer) to
/// `$STEADFAST_TRANSLATED_DIR` for the official SDKs to parse
/// (tests/sdk/check_sdks.py). Ignored: it is a generator, not a check.
#[test]
#[ignore]
fn dump_translated_corpus() {
    let dir =
        std::env::var("STEADFAST_TRANSLATED_DIR").unwrap_or_else(|_| "target/translated".into());
    std::fs::create_dir_all(&dir).unwrap();
    for (up, client, path) in all_corpus() {
        let (out, ..) = run(up, client, &ctx(true), corpus(path).as_bytes(), &[]);
        let name = format!(
            "{}__{}.sse",
            client.as_str(),
            path.replace('/', "_").trim_end_matches(".sse")
        );
        std::fs::write(format!("{dir}/{name}"), out).unwrap();
    }
    let answers = [
        (Api::OpenAi, Api::Anthropic, "chat/response_tools.json"),
        (Api::OpenAi, Api::Anthropic, "chat/response_refusal.json"),
        (
            Api::OpenAiResponses,
            Api::Anthropic,
            "responses/response_tools.json",
        ),
        (Api::Anthropic, Api::OpenAi, "messages/response_tools.json"),
        (
            Api::Anthropic,
            Api::OpenAi,
            "messages/response_max_tokens.json",
        ),
    ];
    for (up, client, path) in answers {
        let r =
            crate::translate::translate_response(up, client, corpus(path).as_bytes(), &ctx(false))
                .unwrap();
        let name = format!("{}__{}", client.as_str(), path.replace('/', "_"));
        std::fs::write(format!("{dir}/{name}"), &r.body).unwrap();
    }
}

/// Claude Code's request shape (system blocks, tools, `?beta=true`) on a
/// route whose only provider speaks Chat: the request translates, the
/// provider's tool-calling stream comes back as a Messages stream, and the
/// next request (with the tool results) translates into a valid Chat
/// continuation: one tool-using turn, end to end through the translators.
#[test]
fn claude_code_completes_a_tool_turn_against_a_chat_provider() {
    use crate::translate::{plan, translate_request, Plan};
    use std::collections::BTreeMap;
    // `?beta=true` is a query: routing sees the normalised path without it.
    assert_eq!(
        plan(Api::Anthropic, Api::OpenAi, "/v1/messages"),
        Plan::Translate {
            path: "/v1/chat/completions"
        }
    );
    let mut models = BTreeMap::new();
    models.insert("claude-sonnet-4-5".to_string(), "gpt-4.1".to_string());
    let first = corpus("messages/request_claude_code.json");
    let t = translate_request(Api::Anthropic, Api::OpenAi, first.as_bytes(), &models).unwrap();
    let sent: Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(sent["model"], "gpt-4.1");
    assert_eq!(sent["tools"][0]["function"]["name"], "Bash");

    let (out, end, summary) = run(
        Api::OpenAi,
        Api::Anthropic,
        &t.reply,
        corpus("chat/stream_parallel_tools.sse").as_bytes(),
        &[],
    );
    assert_eq!(end, StreamEnd::Complete);
    assert_eq!(summary.stop, Some(StopReason::ToolUse));
    let a = messages_client(&out);

    // Claude Code appends the assistant turn it rebuilt and the results.
    let mut next: Value = serde_json::from_str(&first).unwrap();
    let mut content = vec![serde_json::json!({"type": "text", "text": a.text})];
    let mut results = Vec::new();
    for c in &a.calls {
        let input: Value = serde_json::from_str(&c.fragments.concat()).unwrap();
        content.push(
            serde_json::json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}),
        );
        results.push(serde_json::json!({"type": "tool_result", "tool_use_id": c.id, "content": format!("result of {}", c.name)}));
    }
    let msgs = next["messages"].as_array_mut().unwrap();
    msgs.push(serde_json::json!({"role": "assistant", "content": content}));
    msgs.push(serde_json::json!({"role": "user", "content": results}));
    let t2 = translate_request(
        Api::Anthropic,
        Api::OpenAi,
        &serde_json::to_vec(&next).unwrap(),
        &models,
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&t2.body).unwrap();
    let m = v["messages"].as_array().unwrap();
    let n = m.len();
    assert_eq!(m[n - 3]["role"], "assistant");
    assert_eq!(m[n - 3]["content"], "Checking both.");
    let calls = m[n - 3]["tool_calls"].as_array().unwrap();
    assert_eq!(calls[0]["id"], "call_DdmO9pD3xa9XTPNJ32zg2hcA");
    assert_eq!(
        calls[0]["function"]["arguments"],
        "{\"location\":\"Paris\"}"
    );
    assert_eq!(calls[1]["function"]["name"], "get_time");
    assert_eq!(m[n - 2]["role"], "tool");
    assert_eq!(m[n - 2]["tool_call_id"], "call_DdmO9pD3xa9XTPNJ32zg2hcA");
    assert_eq!(m[n - 1]["tool_call_id"], "call_ABCDEFGHIJKLMNOPQRSTUVWX");
    assert_eq!(m[n - 1]["content"], "result of get_time");
}
