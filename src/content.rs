//! Reading provider payloads for what failover needs to know:
//! whether a 2xx answer holds any content, and which class an error
//! payload belongs to, be it a 4xx body or an error event inside a 200
//! stream. Pure functions over bytes; typed and borrowing, so a large
//! answer is scanned, not turned into a JSON tree.

use crate::outcome::ErrorClass;
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::borrow::Cow;
use std::time::Duration;

/// An error payload, as far as failover cares.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorVerdict {
    pub class: ErrorClass,
    /// A retry hint the payload carries ("try again in 1.5s"), fed to the
    /// cooldown as a `Retry-After` would be.
    pub retry_after: Option<Duration>,
    /// The provider's own words, for the attempt chain (bounded).
    pub message: String,
}

/// Every error shape the dialects use: Anthropic
/// `{"type":"error","error":{"type","message"}}`, OpenAI
/// `{"error":{"type","code","message"}}`, the Responses API's `error` event
/// `{"type":"error","code","message"}` and `response.failed`
/// `{"response":{"error":{"code","message"}}}`.
#[derive(Deserialize, Default)]
struct Payload<'a> {
    #[serde(borrow, default)]
    error: Option<Inner<'a>>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    response: Option<Box<Payload<'a>>>,
}

#[derive(Deserialize, Default)]
struct Inner<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    code: Option<Code<'a>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

/// OpenAI sends `code` as a string, some compatible servers as a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Code<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Other(IgnoredAny),
}

const MAX_MESSAGE: usize = 300;

/// Classify an error event's data inside a 2xx stream. Unknown error
/// types are the provider's trouble (`server`): a stream that started
/// fine and then reports an error did not fail because of the request.
pub fn stream_error(data: &str) -> ErrorVerdict {
    let p: Payload = serde_json::from_str(data).unwrap_or_default();
    let (kind, code, message) = parts(&p);
    let class = kind
        .and_then(class_of_type)
        .or_else(|| code.and_then(class_of_type))
        .unwrap_or(ErrorClass::Server);
    verdict(class, code, message)
}

/// Classify a 4xx body whose status says `request`: a context-window
/// overflow is `context_length` (another provider's model may be larger),
/// anything else stays `request`. A content-policy refusal is `request`.
pub fn request_error(body: &[u8]) -> ErrorVerdict {
    let p: Payload = serde_json::from_slice(body).unwrap_or_default();
    let (_, code, message) = parts(&p);
    let message = message.or_else(|| {
        // Not the usual shape (Bedrock's {"message":...}, plain text):
        // the raw text still says whether the prompt was too long.
        std::str::from_utf8(body).ok()
    });
    verdict(ErrorClass::Request, code, message)
}

fn parts<'p>(p: &'p Payload<'p>) -> (Option<&'p str>, Option<&'p str>, Option<&'p str>) {
    if let Some(r) = p.response.as_deref() {
        if r.error.is_some() || r.code.is_some() {
            return parts(r);
        }
    }
    match &p.error {
        Some(e) => (
            e.kind.as_deref(),
            match &e.code {
                Some(Code::Text(c)) => Some(c.as_ref()),
                _ => None,
            },
            e.message.as_deref(),
        ),
        None => (None, p.code.as_deref(), p.message.as_deref()),
    }
}

fn verdict(class: ErrorClass, code: Option<&str>, message: Option<&str>) -> ErrorVerdict {
    let message = message.unwrap_or("");
    let class = if code.is_some_and(|c| c == "context_length_exceeded") || says_too_long(message) {
        // Whatever the type says (Anthropic: invalid_request_error), the
        // prompt did not fit this model.
        ErrorClass::ContextLength
    } else {
        class
    };
    let mut m: String = message.chars().take(MAX_MESSAGE).collect();
    if m.len() < message.len() {
        m.push('…');
    }
    ErrorVerdict {
        class,
        retry_after: retry_hint(message),
        message: m,
    }
}

/// Error types and codes of both dialects, mapped onto steadfast's classes.
fn class_of_type(t: &str) -> Option<ErrorClass> {
    Some(match t {
        "overloaded_error" | "api_error" | "server_error" | "service_unavailable" => {
            ErrorClass::Server
        }
        "rate_limit_error" | "rate_limit_exceeded" | "requests" | "tokens" => ErrorClass::RateLimit,
        "authentication_error" | "permission_error" | "invalid_api_key" => ErrorClass::Auth,
        "invalid_request_error" | "not_found_error" | "request_too_large" => ErrorClass::Request,
        "context_length_exceeded" => ErrorClass::ContextLength,
        _ => return None,
    })
}

/// The phrases providers use when a prompt exceeds the context window:
/// Anthropic (and Claude on Vertex) "prompt is too long", OpenAI "maximum
/// context length", Bedrock "Input is too long", Gemini-style "exceeds the
/// maximum number of tokens".
fn says_too_long(message: &str) -> bool {
    const PHRASES: [&str; 6] = [
        "prompt is too long",
        "maximum context length",
        "context_length_exceeded",
        "input is too long",
        "exceeds the maximum number of tokens",
        "context window",
    ];
    let lower = message.to_ascii_lowercase();
    PHRASES.iter().any(|p| lower.contains(p))
}

/// "Please try again in 6m0s" / "in 1.5s" / "in 20ms" (OpenAI's rate-limit
/// wording).
fn retry_hint(message: &str) -> Option<Duration> {
    let i = message.find("try again in ")?;
    let rest = &message[i + "try again in ".len()..];
    let token: &str = rest
        .split(|c: char| c.is_whitespace() || c == ',' || c == ')')
        .next()?
        .trim_end_matches('.');
    crate::health::parse_go_duration(token)
}

/// Whether a 2xx JSON answer holds no content and no tool call (class
/// `empty`). Only a body of a known shape is judged empty; anything else is
/// taken as an answer.
pub fn is_empty_answer(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Answer<'a> {
        #[serde(borrow, rename = "type", default)]
        kind: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        object: Option<Cow<'a, str>>,
        /// Anthropic Messages.
        #[serde(borrow, default)]
        content: Option<Vec<Block<'a>>>,
        /// OpenAI Chat Completions.
        #[serde(borrow, default)]
        choices: Option<Vec<Choice<'a>>>,
        /// OpenAI Responses.
        #[serde(borrow, default)]
        output: Option<Vec<Item<'a>>>,
    }
    #[derive(Deserialize)]
    struct Block<'a> {
        #[serde(borrow, rename = "type", default)]
        kind: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        text: Option<Cow<'a, str>>,
    }
    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(borrow, default)]
        message: Option<Message<'a>>,
    }
    #[derive(Deserialize)]
    struct Message<'a> {
        #[serde(default)]
        content: Option<ChatContent<'a>>,
        #[serde(borrow, default)]
        refusal: Option<Cow<'a, str>>,
        #[serde(default)]
        tool_calls: Option<Vec<IgnoredAny>>,
        #[serde(default)]
        function_call: Option<IgnoredAny>,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ChatContent<'a> {
        Text(#[serde(borrow)] Cow<'a, str>),
        Parts(Vec<IgnoredAny>),
    }
    #[derive(Deserialize)]
    struct Item<'a> {
        #[serde(borrow, rename = "type", default)]
        kind: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        content: Option<Vec<Block<'a>>>,
    }
    let Ok(a) = serde_json::from_slice::<Answer>(body) else {
        return false;
    };
    let text = |t: &Option<Cow<str>>| t.as_deref().is_some_and(|t| !t.trim().is_empty());
    if a.kind.as_deref() == Some("message") {
        let Some(blocks) = a.content else {
            return false;
        };
        return !blocks.iter().any(|b| match b.kind.as_deref() {
            Some("text") => text(&b.text),
            // tool_use, server_tool_use and other non-text blocks are an
            // answer; thinking alone is not.
            Some("thinking") | Some("redacted_thinking") => false,
            _ => true,
        });
    }
    if let Some(choices) = a.choices {
        if !a
            .object
            .as_deref()
            .is_some_and(|o| o.starts_with("chat.completion"))
        {
            return false;
        }
        return !choices.iter().filter_map(|c| c.message.as_ref()).any(|m| {
            let content = match &m.content {
                Some(ChatContent::Text(t)) => !t.trim().is_empty(),
                Some(ChatContent::Parts(p)) => !p.is_empty(),
                None => false,
            };
            content
                || text(&m.refusal)
                || m.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
                || m.function_call.is_some()
        });
    }
    if a.object.as_deref() == Some("response") {
        let Some(items) = a.output else {
            return false;
        };
        return !items.iter().any(|i| match i.kind.as_deref() {
            Some("message") => i.content.as_ref().is_some_and(|c| {
                c.iter()
                    .any(|b| text(&b.text) || b.kind.as_deref() == Some("refusal"))
            }),
            Some("reasoning") => false,
            // function_call and the other *_call items are an answer.
            _ => true,
        });
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass::*;

    #[test]
    fn anthropic_stream_errors_by_type() {
        let e = |t: &str| {
            stream_error(&format!(
                r#"{{"type":"error","error":{{"type":"{t}","message":"m"}}}}"#
            ))
            .class
        };
        assert_eq!(e("overloaded_error"), Server);
        assert_eq!(e("api_error"), Server);
        assert_eq!(e("rate_limit_error"), RateLimit);
        assert_eq!(e("authentication_error"), Auth);
        assert_eq!(e("permission_error"), Auth);
        assert_eq!(e("invalid_request_error"), Request);
        assert_eq!(e("something_new"), Server);
        assert_eq!(stream_error("not json").class, Server);
    }

    #[test]
    fn openai_and_responses_stream_errors() {
        let v = stream_error(
            r#"{"error":{"message":"Rate limit reached. Please try again in 1.5s.","type":"requests","code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(v.class, RateLimit);
        assert_eq!(v.retry_after, Some(Duration::from_millis(1500)));
        let v = stream_error(r#"{"type":"error","code":"server_error","message":"boom"}"#);
        assert_eq!(v.class, Server);
        assert_eq!(v.message, "boom");
        let v = stream_error(
            r#"{"type":"response.failed","response":{"status":"failed","error":{"code":"rate_limit_exceeded","message":"slow down"}}}"#,
        );
        assert_eq!(v.class, RateLimit);
        let v = stream_error(r#"{"error":{"message":"x","type":"server_error","code":500}}"#);
        assert_eq!(v.class, Server);
    }

    #[test]
    fn context_length_is_recognised_in_every_dialect() {
        let anthropic = br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 212345 tokens > 200000 maximum"}}"#;
        assert_eq!(request_error(anthropic).class, ContextLength);
        let openai = br#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        assert_eq!(request_error(openai).class, ContextLength);
        let bedrock = br#"{"message":"Input is too long for requested model."}"#;
        assert_eq!(request_error(bedrock).class, ContextLength);
        // A policy refusal or a malformed request stays `request`.
        let policy = br#"{"type":"error","error":{"type":"invalid_request_error","message":"Output blocked by content filtering policy"}}"#;
        assert_eq!(request_error(policy).class, Request);
        assert_eq!(request_error(b"<html>bad</html>").class, Request);
        // Inside a stream too.
        assert_eq!(
            stream_error(r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long"}}"#).class,
            ContextLength
        );
    }

    #[test]
    fn messages_are_bounded() {
        let long = "x".repeat(5000);
        let v = stream_error(&format!(r#"{{"error":{{"message":"{long}"}}}}"#));
        assert!(v.message.chars().count() <= MAX_MESSAGE + 1);
    }

    #[test]
    fn empty_answers_per_dialect() {
        // Anthropic.
        assert!(is_empty_answer(
            br#"{"type":"message","role":"assistant","content":[],"stop_reason":"end_turn"}"#
        ));
        assert!(is_empty_answer(
            br#"{"type":"message","content":[{"type":"text","text":"  "}]}"#
        ));
        assert!(is_empty_answer(
            br#"{"type":"message","content":[{"type":"thinking","thinking":"hm","signature":"s"}]}"#
        ));
        assert!(!is_empty_answer(
            br#"{"type":"message","content":[{"type":"text","text":"Hi"}]}"#
        ));
        assert!(!is_empty_answer(
            br#"{"type":"message","content":[{"type":"tool_use","id":"t","name":"f","input":{}}]}"#
        ));
        // Chat.
        assert!(is_empty_answer(
            br#"{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":""},"finish_reason":"stop"}]}"#
        ));
        assert!(is_empty_answer(
            br#"{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":null}}]}"#
        ));
        assert!(!is_empty_answer(
            br#"{"object":"chat.completion","choices":[{"message":{"content":"Hi"}}]}"#
        ));
        assert!(!is_empty_answer(
            br#"{"object":"chat.completion","choices":[{"message":{"content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}}]}"#
        ));
        // Responses.
        assert!(is_empty_answer(
            br#"{"object":"response","status":"completed","output":[]}"#
        ));
        assert!(is_empty_answer(
            br#"{"object":"response","output":[{"type":"message","content":[{"type":"output_text","text":""}]}]}"#
        ));
        assert!(!is_empty_answer(
            br#"{"object":"response","output":[{"type":"message","content":[{"type":"output_text","text":"Hi"}]}]}"#
        ));
        assert!(!is_empty_answer(
            br#"{"object":"response","output":[{"type":"function_call","name":"f","arguments":"{}"}]}"#
        ));
        // Unknown shapes are never judged empty.
        assert!(!is_empty_answer(b"{}"));
        assert!(!is_empty_answer(b"not json"));
        assert!(!is_empty_answer(br#"{"data":[]}"#));
    }
}
