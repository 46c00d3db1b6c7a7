//! Response bodies in the three wire dialects: Anthropic Messages, OpenAI
//! Chat Completions and OpenAI Responses, as JSON answers, SSE events and
//! error objects. Written straight into a reused buffer, no JSON tree.

use super::{Behavior, MockApi};
use std::fmt;

#[derive(Clone, Copy)]
pub(super) enum Kind {
    Messages,
    Chat,
    Responses,
}

impl Kind {
    /// Events before and after the deltas.
    pub(super) fn sse_shape(self, include_usage: bool) -> (usize, usize) {
        match self {
            Kind::Messages => (3, 3),
            Kind::Chat => (0, if include_usage { 3 } else { 2 }),
            // created, in_progress, output_item.added, content_part.added; then
            // output_text.done, content_part.done, output_item.done, completed.
            Kind::Responses => (4, 4),
        }
    }
}

#[derive(Clone, Copy)]
pub(super) enum Phase {
    Pre(usize),
    Delta(usize),
    Post(usize),
}

impl Kind {
    /// The step of a stream's first content-bearing event (Anthropic's
    /// content_block_start comes right after message_start; a chat stream's
    /// first chunk already has content; a Responses stream opens its item
    /// and part first).
    pub(super) fn first_content_step(self, pre: usize) -> usize {
        match self {
            Kind::Messages => 1,
            Kind::Chat | Kind::Responses => pre,
        }
    }

    /// Events an empty answer leaves out: the content block around the
    /// (absent) deltas.
    pub(super) fn is_content_frame(self, phase: Phase) -> bool {
        matches!(
            (self, phase),
            (Kind::Messages, Phase::Pre(1) | Phase::Post(0)) | (_, Phase::Delta(_))
        )
    }
}

/// A keep-alive that carries nothing: Anthropic's `ping`, an SSE comment
/// for the OpenAI dialects.
pub(super) fn keepalive(w: &mut Vec<u8>, kind: Kind) {
    match kind {
        Kind::Messages => w.extend_from_slice(b"event: ping\ndata: {\"type\":\"ping\"}\n\n"),
        Kind::Chat | Kind::Responses => w.extend_from_slice(b": keep-alive\n\n"),
    }
}

/// The error event a provider sends inside a 200 stream, in the dialect.
pub(super) fn error_event(w: &mut Vec<u8>, kind: Kind, r: &Reply, seq: usize) {
    let t = r.b.error_event_type.as_str();
    let msg = Esc(&r.b.error_event_message);
    // OpenAI's names for the same trouble.
    let (otype, code) = match t {
        "rate_limit_error" => ("requests", "rate_limit_exceeded"),
        "invalid_request_error" => ("invalid_request_error", "invalid_request_error"),
        "authentication_error" => ("invalid_request_error", "invalid_api_key"),
        _ => ("server_error", "server_error"),
    };
    match kind {
        Kind::Messages => w!(
            w,
            "event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"{t}\",\"message\":\"{msg}\"}}}}\n\n"
        ),
        Kind::Chat => w!(
            w,
            "data: {{\"error\":{{\"message\":\"{msg}\",\"type\":\"{otype}\",\"param\":null,\"code\":\"{code}\"}}}}\n\n"
        ),
        Kind::Responses => w!(
            w,
            "event: error\ndata: {{\"type\":\"error\",\"sequence_number\":{seq},\"code\":\"{code}\",\"message\":\"{msg}\",\"param\":null}}\n\n"
        ),
    }
}

pub(super) struct Reply<'a> {
    pub(super) name: &'a str,
    pub(super) n: usize,
    pub(super) model: &'a str,
    pub(super) b: &'a Behavior,
    /// Words of a prefill repeated at the start of the answer.
    pub(super) echo: Option<&'a str>,
    pub(super) include_usage: bool,
    pub(super) created: u64,
}

/// JSON string contents (no quotes), escaped while formatting.
pub(super) struct Esc<'a>(pub(super) &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let mut start = 0;
        for (i, &c) in s.as_bytes().iter().enumerate() {
            let esc = match c {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            // Slicing is safe: the byte at `i` is ASCII, hence a char boundary.
            f.write_str(&s[start..i])?;
            if esc.is_empty() {
                write!(f, "\\u{c:04x}")?;
            } else {
                f.write_str(esc)?;
            }
            start = i + 1;
        }
        f.write_str(&s[start..])
    }
}

/// `n` filler characters for large responses.
struct Pad(usize);

impl fmt::Display for Pad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const X: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
        let mut left = self.0;
        while left > 0 {
            let k = left.min(X.len());
            f.write_str(&X[..k])?;
            left -= k;
        }
        Ok(())
    }
}

pub(super) fn error_json(w: &mut Vec<u8>, api: MockApi, status: u16, msg: &str) {
    match api {
        MockApi::Anthropic => {
            let t = match status {
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                500..=599 => "api_error",
                _ => "invalid_request_error",
            };
            w!(
                w,
                r#"{{"type":"error","error":{{"type":"{t}","message":"{}"}}}}"#,
                Esc(msg)
            );
        }
        MockApi::OpenAi => {
            let t = match status {
                429 => "rate_limit_exceeded",
                500..=599 => "server_error",
                _ => "invalid_request_error",
            };
            w!(
                w,
                r#"{{"error":{{"message":"{}","type":"{t}","param":null,"code":null}}}}"#,
                Esc(msg)
            );
        }
    }
}

pub(super) fn models_json(w: &mut Vec<u8>, api: MockApi) {
    w.extend_from_slice(match api {
        MockApi::Anthropic => {
            br#"{"data":[{"type":"model","id":"mock-model","display_name":"Mock Model","created_at":"2025-01-01T00:00:00Z"}],"has_more":false,"first_id":"mock-model","last_id":"mock-model"}"#
                as &[u8]
        }
        MockApi::OpenAi => {
            br#"{"object":"list","data":[{"id":"mock-model","object":"model","created":1735689600,"owned_by":"mock"}]}"#
        }
    });
}

pub(super) fn anthropic_message(w: &mut Vec<u8>, r: &Reply) {
    w!(
        w,
        r#"{{"id":"msg_mock_{}","type":"message","role":"assistant","model":"{}","content":["#,
        r.n,
        Esc(r.model)
    );
    if !r.b.empty {
        w!(
            w,
            r#"{{"type":"text","text":"Hello from {}{}"}}"#,
            Esc(r.name),
            Pad(r.b.body_size)
        );
    }
    w!(
        w,
        r#"],"stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":{},"output_tokens":{}}}}}"#,
        r.b.input_tokens,
        r.b.output_tokens
    );
}

pub(super) fn chat_completion(w: &mut Vec<u8>, r: &Reply) {
    w!(
        w,
        r#"{{"id":"chatcmpl-mock-{}","object":"chat.completion","created":{},"model":"{}","choices":[{{"index":0,"message":{{"role":"assistant","content":"{}{}{}","refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{}}}}}"#,
        r.n,
        r.created,
        Esc(r.model),
        if r.b.empty { "" } else { "Hello from " },
        Esc(if r.b.empty { "" } else { r.name }),
        Pad(r.b.body_size),
        r.b.input_tokens,
        r.b.output_tokens,
        r.b.input_tokens.saturating_add(r.b.output_tokens)
    );
}

/// A Responses API object; `done` = final form with output and usage.
pub(super) fn response_object(w: &mut Vec<u8>, r: &Reply, done: bool, streamed: bool) {
    let status = if done { "completed" } else { "in_progress" };
    w!(
        w,
        r#"{{"id":"resp_mock_{}","object":"response","created_at":{},"status":"{status}","model":"{}","output":["#,
        r.n,
        r.created,
        Esc(r.model)
    );
    if done {
        w!(
            w,
            r#"{{"type":"message","id":"msg_mock_{}","status":"completed","role":"assistant","content":[{{"type":"output_text","text":""#,
            r.n
        );
        if streamed {
            full_text(w, r);
        } else if !r.b.empty {
            w!(w, "Hello from {}{}", Esc(r.name), Pad(r.b.body_size));
        }
        w!(
            w,
            r#"","annotations":[]}}]}}],"usage":{{"input_tokens":{},"output_tokens":{},"total_tokens":{}}}}}"#,
            r.b.input_tokens,
            r.b.output_tokens,
            r.b.input_tokens.saturating_add(r.b.output_tokens)
        );
    } else {
        w.extend_from_slice(br#"],"usage":null}"#);
    }
}

/// The answer text, escaped. Streams are the concatenation of their deltas.
fn full_text(w: &mut Vec<u8>, r: &Reply) {
    for i in 0..r.b.events {
        delta_text(w, r, i);
    }
}

/// Delta `i` of the streamed answer: `"Hello"`, `" from"`, `" <name>"`, then
/// `" again"` for any further ones; fewer than 3 deltas carry the rest of the
/// sentence in the last one. Padding is spread evenly over the deltas.
fn delta_text(w: &mut Vec<u8>, r: &Reply, i: usize) {
    if i == 0 {
        if let Some(echo) = r.echo {
            w!(w, "{}", Esc(echo));
        }
    }
    let events = r.b.events;
    let (from, to) = if i + 1 == events && events < 3 {
        (i, 3)
    } else if i < 3 {
        (i, i + 1)
    } else {
        (3, 4)
    };
    for word in from..to {
        match word {
            0 => w.extend_from_slice(b"Hello"),
            1 => w.extend_from_slice(b" from"),
            2 => w!(w, " {}", Esc(r.name)),
            _ => w.extend_from_slice(b" again"),
        }
    }
    let per = events.max(1);
    let pad = r.b.body_size / per + usize::from(i < r.b.body_size % per);
    w!(w, "{}", Pad(pad));
}

pub(super) fn sse_event(w: &mut Vec<u8>, kind: Kind, phase: Phase, r: &Reply) {
    let (n, m) = (r.n, Esc(r.model));
    match (kind, phase) {
        (Kind::Messages, Phase::Pre(0)) => w!(
            w,
            "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_mock_{n}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"{m}\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{},\"output_tokens\":1}}}}}}\n\n",
            r.b.input_tokens
        ),
        (Kind::Messages, Phase::Pre(1)) => w.extend_from_slice(
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        ),
        (Kind::Messages, Phase::Pre(_)) => w.extend_from_slice(b"event: ping\ndata: {\"type\":\"ping\"}\n\n"),
        (Kind::Messages, Phase::Delta(i)) => {
            w.extend_from_slice(
                b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"",
            );
            delta_text(w, r, i);
            w.extend_from_slice(b"\"}}\n\n");
        }
        (Kind::Messages, Phase::Post(0)) => w.extend_from_slice(
            b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        ),
        (Kind::Messages, Phase::Post(1)) => w!(
            w,
            "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}\n\n",
            r.b.output_tokens
        ),
        (Kind::Messages, Phase::Post(_)) => {
            w.extend_from_slice(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
        }
        (Kind::Chat, Phase::Post(k)) if k + 1 == kind.sse_shape(r.include_usage).1 => {
            w.extend_from_slice(b"data: [DONE]\n\n")
        }
        (Kind::Chat, phase) => {
            w!(
                w,
                "data: {{\"id\":\"chatcmpl-mock-{n}\",\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":\"{m}\",",
                r.created
            );
            match phase {
                Phase::Delta(i) => {
                    w.extend_from_slice(br#""choices":[{"index":0,"delta":{"#);
                    if i == 0 {
                        w.extend_from_slice(br#""role":"assistant","#);
                    }
                    w.extend_from_slice(br#""content":""#);
                    delta_text(w, r, i);
                    w.extend_from_slice(br#""},"logprobs":null,"finish_reason":null}]"#);
                }
                Phase::Post(0) | Phase::Pre(_) => w.extend_from_slice(
                    br#""choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]"#,
                ),
                Phase::Post(_) => {
                    w!(
                        w,
                        r#""choices":[],"usage":{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{}}}}}"#,
                        r.b.input_tokens,
                        r.b.output_tokens,
                        r.b.input_tokens.saturating_add(r.b.output_tokens)
                    );
                    w.extend_from_slice(b"\n\n");
                    return;
                }
            }
            // Real OpenAI streams carry "usage":null on every chunk once usage was asked for.
            if r.include_usage {
                w.extend_from_slice(br#","usage":null"#);
            }
            w.extend_from_slice(b"}\n\n");
        }
        (Kind::Responses, Phase::Pre(k)) if k < 2 => {
            let ty = if k == 0 {
                "response.created"
            } else {
                "response.in_progress"
            };
            w!(
                w,
                "event: {ty}\ndata: {{\"type\":\"{ty}\",\"sequence_number\":{k},\"response\":"
            );
            response_object(w, r, false, true);
            w.extend_from_slice(b"}\n\n");
        }
        // Codex prints nothing until the message item and its text part
        // are opened, as a real Responses stream does.
        (Kind::Responses, Phase::Pre(2)) => w!(
            w,
            "event: response.output_item.added\ndata: {{\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"item\":{{\"id\":\"msg_mock_{n}\",\"type\":\"message\",\"status\":\"in_progress\",\"role\":\"assistant\",\"content\":[]}}}}\n\n"
        ),
        (Kind::Responses, Phase::Pre(_)) => w!(
            w,
            "event: response.content_part.added\ndata: {{\"type\":\"response.content_part.added\",\"sequence_number\":3,\"item_id\":\"msg_mock_{n}\",\"output_index\":0,\"content_index\":0,\"part\":{{\"type\":\"output_text\",\"text\":\"\",\"annotations\":[]}}}}\n\n"
        ),
        (Kind::Responses, Phase::Delta(i)) => {
            w!(
                w,
                "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"sequence_number\":{},\"item_id\":\"msg_mock_{n}\",\"output_index\":0,\"content_index\":0,\"delta\":\"",
                4 + i
            );
            delta_text(w, r, i);
            w.extend_from_slice(b"\"}\n\n");
        }
        (Kind::Responses, Phase::Post(k)) => {
            let seq = 4 + r.b.events + k;
            match k {
                0 => {
                    w!(
                        w,
                        "event: response.output_text.done\ndata: {{\"type\":\"response.output_text.done\",\"sequence_number\":{seq},\"item_id\":\"msg_mock_{n}\",\"output_index\":0,\"content_index\":0,\"text\":\""
                    );
                    full_text(w, r);
                    w.extend_from_slice(b"\"}\n\n");
                }
                1 => {
                    w!(
                        w,
                        "event: response.content_part.done\ndata: {{\"type\":\"response.content_part.done\",\"sequence_number\":{seq},\"item_id\":\"msg_mock_{n}\",\"output_index\":0,\"content_index\":0,\"part\":{{\"type\":\"output_text\",\"text\":\""
                    );
                    full_text(w, r);
                    w.extend_from_slice(b"\",\"annotations\":[]}}\n\n");
                }
                2 => {
                    w!(
                        w,
                        "event: response.output_item.done\ndata: {{\"type\":\"response.output_item.done\",\"sequence_number\":{seq},\"output_index\":0,\"item\":{{\"id\":\"msg_mock_{n}\",\"type\":\"message\",\"status\":\"completed\",\"role\":\"assistant\",\"content\":[{{\"type\":\"output_text\",\"text\":\""
                    );
                    full_text(w, r);
                    w.extend_from_slice(b"\",\"annotations\":[]}]}}\n\n");
                }
                _ => {
                    w!(
                        w,
                        "event: response.completed\ndata: {{\"type\":\"response.completed\",\"sequence_number\":{seq},\"response\":"
                    );
                    response_object(w, r, true, true);
                    w.extend_from_slice(b"}\n\n");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(b: &Behavior) -> Reply<'_> {
        Reply {
            name: "m\"1",
            n: 1,
            model: "x",
            b,
            echo: None,
            include_usage: false,
            created: 0,
        }
    }

    #[test]
    fn esc_makes_any_string_a_json_string() {
        let s = "a\"b\\c\nd\re\tf\u{1}g\u{1f}é";
        let quoted = format!("\"{}\"", Esc(s));
        assert_eq!(serde_json::from_str::<String>(&quoted).unwrap(), s);
        assert_eq!(Esc("plain").to_string(), "plain");
    }

    #[test]
    fn deltas_concatenate_to_the_full_text_with_padding_spread() {
        for (events, body_size) in [(1, 0), (2, 5), (3, 0), (5, 7), (4, 3)] {
            let b = Behavior {
                events,
                body_size,
                ..Behavior::default()
            };
            let r = reply(&b);
            let mut joined = Vec::new();
            let mut pads = Vec::new();
            for i in 0..events {
                let mut d = Vec::new();
                delta_text(&mut d, &r, i);
                pads.push(d.iter().filter(|&&c| c == b'x').count());
                joined.extend_from_slice(&d);
            }
            let mut full = Vec::new();
            full_text(&mut full, &r);
            assert_eq!(joined, full);
            let text = String::from_utf8(full).unwrap();
            let words = text.trim_end_matches('x');
            let want = if events > 3 {
                format!("Hello from m\\\"1{}", " again".repeat(events - 3))
            } else {
                "Hello from m\\\"1".to_string()
            };
            assert_eq!(words.replace('x', ""), want, "events={events}");
            assert_eq!(pads.iter().sum::<usize>(), body_size);
            assert!(pads.iter().max().unwrap() - pads.iter().min().unwrap() <= 1);
        }
    }
}
