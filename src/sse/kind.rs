//! What one SSE event means, per dialect: setup before any content, a
//! keep-alive, content, the stream's terminal event, or an error. The
//! request path holds a response until its first content and knows a
//! stream has finished once its terminal event went out (a client may then
//! leave without that being a failure).
//!
//! Classification reads the event name where the dialect sends one
//! (Anthropic Messages, OpenAI Responses) and looks into the JSON only where
//! it must (OpenAI Chat chunks, which carry no event names).

use crate::config::Api;
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Structure before any content: `message_start`, a role-only chat
    /// chunk, `response.created`.
    Setup,
    /// `ping`, SSE comments: keeps the connection alive, says nothing.
    Keepalive,
    /// Carries (or opens) content: a text, thinking or refusal delta, a
    /// tool call or its arguments, a content block.
    Content,
    /// Neither content nor an end: `message_delta`, a usage-only chunk, a
    /// `*.done` event.
    Other,
    /// The stream's own last event: `message_stop`, `data: [DONE]`,
    /// `response.completed`.
    Terminal,
    /// An error reported inside the stream.
    Error,
}

/// Classify one event (`name` from its `event:` line, `data` joined).
pub fn classify(api: Api, name: Option<&str>, data: &str) -> EventKind {
    let data = data.trim();
    if data.is_empty() && name.is_none() {
        return EventKind::Keepalive;
    }
    match api {
        Api::Anthropic => anthropic(name.map_or_else(|| data_type(data), Cow::Borrowed).as_ref()),
        Api::OpenAi | Api::OpenAiResponses => {
            if data == "[DONE]" {
                return EventKind::Terminal;
            }
            let ty = name.map_or_else(|| data_type(data), Cow::Borrowed);
            if ty.starts_with("response.") || ty == "error" {
                responses(&ty, data)
            } else {
                chat(data)
            }
        }
    }
}

fn anthropic(ty: &str) -> EventKind {
    match ty {
        "message_start" => EventKind::Setup,
        "ping" => EventKind::Keepalive,
        "content_block_start" | "content_block_delta" | "content_block_stop" => EventKind::Content,
        "message_stop" => EventKind::Terminal,
        "error" => EventKind::Error,
        _ => EventKind::Other,
    }
}

fn responses(ty: &str, data: &str) -> EventKind {
    match ty {
        "response.created" | "response.in_progress" | "response.queued" => EventKind::Setup,
        "response.content_part.added" => EventKind::Setup,
        // A message or reasoning item opens empty; a tool call opens with
        // its name, which is already the model's answer.
        "response.output_item.added" => {
            #[derive(Deserialize)]
            struct Added<'a> {
                #[serde(borrow)]
                item: Option<Item<'a>>,
            }
            #[derive(Deserialize)]
            struct Item<'a> {
                #[serde(borrow, rename = "type")]
                kind: Option<Cow<'a, str>>,
            }
            let kind = serde_json::from_str::<Added>(data)
                .ok()
                .and_then(|a| a.item)
                .and_then(|i| i.kind);
            match kind.as_deref() {
                Some("message") | Some("reasoning") | None => EventKind::Setup,
                Some(_) => EventKind::Content,
            }
        }
        "response.completed" | "response.incomplete" => EventKind::Terminal,
        "response.failed" | "error" => EventKind::Error,
        t if t.ends_with(".delta") => EventKind::Content,
        _ => EventKind::Other,
    }
}

fn chat(data: &str) -> EventKind {
    #[derive(Deserialize)]
    struct Chunk<'a> {
        #[serde(borrow, default)]
        choices: Vec<Choice<'a>>,
        #[serde(default)]
        error: Option<IgnoredAny>,
    }
    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(borrow, default)]
        delta: Option<Delta<'a>>,
    }
    #[derive(Deserialize, Default)]
    struct Delta<'a> {
        #[serde(borrow, default)]
        content: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        refusal: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        reasoning_content: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        reasoning: Option<Cow<'a, str>>,
        #[serde(default)]
        tool_calls: Option<Vec<IgnoredAny>>,
        #[serde(default)]
        function_call: Option<IgnoredAny>,
        #[serde(borrow, default)]
        role: Option<Cow<'a, str>>,
    }
    let Ok(chunk) = serde_json::from_str::<Chunk>(data) else {
        return EventKind::Other;
    };
    if chunk.error.is_some() {
        return EventKind::Error;
    }
    let mut setup = false;
    for d in chunk.choices.iter().filter_map(|c| c.delta.as_ref()) {
        let text = |s: &Option<Cow<str>>| s.as_deref().is_some_and(|t| !t.is_empty());
        if text(&d.content)
            || text(&d.refusal)
            || text(&d.reasoning_content)
            || text(&d.reasoning)
            || d.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
            || d.function_call.is_some()
        {
            return EventKind::Content;
        }
        setup |= d.role.is_some();
    }
    if setup {
        EventKind::Setup
    } else {
        EventKind::Other
    }
}

/// The `type` member of an event's JSON, for events sent without a name.
fn data_type(data: &str) -> Cow<'_, str> {
    #[derive(Deserialize)]
    struct Typed<'a> {
        #[serde(borrow, rename = "type")]
        kind: Option<Cow<'a, str>>,
    }
    serde_json::from_str::<Typed>(data)
        .ok()
        .and_then(|t| t.kind)
        .unwrap_or(Cow::Borrowed(""))
}

/// Whether these framed bytes (whole events) hold the stream's terminal
/// event. Cheap for the events that cannot be one: a byte search first,
/// the events are only parsed when a marker occurs.
pub fn holds_terminal(api: Api, framed: &[u8]) -> bool {
    const MARKERS: [&[u8]; 3] = [b"message_stop", b"[DONE]", b"response.completed"];
    const INCOMPLETE: &[u8] = b"response.incomplete";
    let hit = MARKERS
        .iter()
        .chain(std::iter::once(&INCOMPLETE))
        .any(|m| memchr::memmem::find(framed, m).is_some());
    hit && super::events(framed)
        .any(|(name, data)| classify(api, name, &data) == EventKind::Terminal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventKind::*;

    #[test]
    fn anthropic_events_by_name_or_type() {
        let a = |n: Option<&str>, d: &str| classify(Api::Anthropic, n, d);
        assert_eq!(a(Some("message_start"), "{}"), Setup);
        assert_eq!(a(Some("ping"), r#"{"type":"ping"}"#), Keepalive);
        assert_eq!(a(Some("content_block_start"), "{}"), Content);
        assert_eq!(a(Some("content_block_delta"), "{}"), Content);
        assert_eq!(a(Some("message_delta"), "{}"), Other);
        assert_eq!(a(Some("message_stop"), "{}"), Terminal);
        assert_eq!(a(Some("error"), "{}"), Error);
        // No event line: the JSON type decides.
        assert_eq!(a(None, r#"{"type":"message_stop"}"#), Terminal);
        assert_eq!(
            a(None, r#"{"type":"content_block_delta","delta":{}}"#),
            Content
        );
        assert_eq!(a(None, ""), Keepalive);
    }

    #[test]
    fn chat_chunks_by_their_delta() {
        let c = |d: &str| classify(Api::OpenAi, None, d);
        assert_eq!(c("[DONE]"), Terminal);
        assert_eq!(
            c(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#),
            Setup
        );
        assert_eq!(
            c(r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#),
            Content
        );
        assert_eq!(
            c(
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f"}}]}}]}"#
            ),
            Content
        );
        assert_eq!(
            c(r#"{"choices":[{"index":0,"delta":{"reasoning_content":"hm"}}]}"#),
            Content
        );
        assert_eq!(
            c(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#),
            Other
        );
        assert_eq!(c(r#"{"choices":[],"usage":{"prompt_tokens":1}}"#), Other);
        assert_eq!(c(r#"{"error":{"message":"overloaded"}}"#), Error);
        assert_eq!(c("not json"), Other);
    }

    #[test]
    fn responses_events() {
        let r = |n: &str, d: &str| classify(Api::OpenAi, Some(n), d);
        assert_eq!(r("response.created", "{}"), Setup);
        assert_eq!(r("response.in_progress", "{}"), Setup);
        assert_eq!(
            r(
                "response.output_item.added",
                r#"{"item":{"type":"message"}}"#
            ),
            Setup
        );
        assert_eq!(
            r(
                "response.output_item.added",
                r#"{"item":{"type":"function_call","name":"f"}}"#
            ),
            Content
        );
        assert_eq!(r("response.content_part.added", "{}"), Setup);
        assert_eq!(r("response.output_text.delta", "{}"), Content);
        assert_eq!(r("response.function_call_arguments.delta", "{}"), Content);
        assert_eq!(r("response.output_text.done", "{}"), Other);
        assert_eq!(r("response.completed", "{}"), Terminal);
        assert_eq!(r("response.failed", "{}"), Error);
        assert_eq!(r("error", "{}"), Error);
        // Without event lines.
        assert_eq!(
            classify(Api::OpenAi, None, r#"{"type":"response.completed"}"#),
            Terminal
        );
    }

    #[test]
    fn terminal_detection_in_framed_bytes() {
        assert!(holds_terminal(
            Api::Anthropic,
            b"event: message_delta\ndata: {}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        ));
        assert!(holds_terminal(
            Api::OpenAi,
            b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n"
        ));
        assert!(holds_terminal(
            Api::OpenAi,
            b"event: response.completed\ndata: {\"type\":\"response.completed\"}\n\n"
        ));
        // The marker inside content is not the end.
        assert!(!holds_terminal(
            Api::OpenAi,
            b"data: {\"choices\":[{\"delta\":{\"content\":\"say [DONE]\"}}]}\n\n"
        ));
        assert!(!holds_terminal(
            Api::Anthropic,
            b"event: content_block_delta\ndata: {\"delta\":{\"text\":\"message_stop\"}}\n\n"
        ));
    }
}
