//! Request translation: a client's body in its dialect to the body a
//! provider of another dialect takes. One file per direction; this one
//! dispatches and holds what the Messages-sourced directions share.

mod from_chat;
mod to_chat;
mod to_responses;

use super::json::StrOr;
use super::{messages, supported, Note, Notes, Untranslatable};
use crate::config::Api;
use bytes::Bytes;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// A translated request.
#[derive(Debug, Clone)]
pub struct Translated {
    /// The body to send (the provider's `models` map already applied).
    pub body: Bytes,
    /// What was left out or changed; log them with the attempt.
    pub notes: Notes,
    /// What the response side needs to answer in the client's terms.
    pub reply: ReplyContext,
}

/// What the client asked for that shapes the answer it gets back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplyContext {
    /// The client asked for SSE.
    pub stream: bool,
    /// A Chat client asked for the final usage chunk
    /// (`stream_options.include_usage`).
    pub include_usage: bool,
    /// Unix seconds for Chat's `created`; the request path sets it.
    pub created: u64,
}

/// Translate `body` from the `client` dialect to the `upstream` one, the
/// model renamed through the provider's `models` map.
pub fn translate_request(
    client: Api,
    upstream: Api,
    body: &[u8],
    models: &BTreeMap<String, String>,
) -> Result<Translated, Untranslatable> {
    if !supported(client, upstream) {
        return Err(Untranslatable::new(format!(
            "{} requests are not translated to {}",
            client.as_str(),
            upstream.as_str()
        )));
    }
    let mut notes = Notes::default();
    let invalid = |e: serde_json::Error| {
        Untranslatable::new(format!(
            "the body is not a valid {} request: {e}",
            client.as_str()
        ))
    };
    let (body, reply) = match client {
        Api::Anthropic => {
            let req: messages::Request = serde_json::from_slice(body).map_err(invalid)?;
            let model = mapped(&req.model, models);
            let reply = ReplyContext {
                stream: req.stream == Some(true),
                include_usage: true,
                created: 0,
            };
            let out = match upstream {
                Api::OpenAi => serde_json::to_vec(&to_chat::translate(&req, model, &mut notes)?),
                _ => serde_json::to_vec(&to_responses::translate(&req, model, &mut notes)?),
            };
            (out, reply)
        }
        _ => {
            let req: super::chat::Request = serde_json::from_slice(body).map_err(invalid)?;
            let model = mapped(&req.model, models);
            let reply = ReplyContext {
                stream: req.stream == Some(true),
                include_usage: req.stream_options.is_some_and(|o| o.include_usage),
                created: 0,
            };
            (
                serde_json::to_vec(&from_chat::translate(&req, model, &mut notes)?),
                reply,
            )
        }
    };
    let body = body.map_err(|e| Untranslatable::new(format!("encoding failed: {e}")))?;
    Ok(Translated {
        body: Bytes::from(body),
        notes,
        reply,
    })
}

fn mapped<'a>(model: &'a str, models: &'a BTreeMap<String, String>) -> &'a str {
    models.get(model).map_or(model, String::as_str)
}

/// OpenAI's reasoning models take an effort and refuse sampling knobs;
/// the others refuse the effort. Only the model's name tells them apart.
fn is_reasoning_model(model: &str) -> bool {
    let m = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    let family = ["o1", "o3", "o4", "gpt-5", "codex"]
        .iter()
        .any(|p| m.starts_with(p));
    family && !m.contains("-chat")
}

/// A thinking budget as an effort.
fn effort(budget: u64) -> &'static str {
    match budget {
        0..=4095 => "low",
        4096..=16383 => "medium",
        _ => "high",
    }
}

/// The effort a Messages request's `thinking` asks of `model`, or `None`
/// (with a note when thinking was asked of a model that has no effort).
fn thinking_effort(
    req: &messages::Request,
    model: &str,
    notes: &mut Notes,
) -> Option<&'static str> {
    let t = req.thinking.as_ref()?;
    if t.kind == "disabled" {
        return None;
    }
    if !is_reasoning_model(model) {
        notes.add(Note::ThinkingNotRequested);
        return None;
    }
    Some(effort(t.budget_tokens.unwrap_or(8192)))
}

/// A Messages `system` as one text (blocks joined by a blank line).
fn system_text<'a>(
    sys: &'a StrOr<'a, Vec<messages::Block<'a>>>,
    notes: &mut Notes,
) -> Result<Cow<'a, str>, Untranslatable> {
    let blocks = match sys {
        StrOr::Str(s) => return Ok(Cow::Borrowed(s.as_ref())),
        StrOr::Other(b) => b,
    };
    let mut texts = Vec::with_capacity(blocks.len());
    for b in blocks {
        if b.kind != "text" {
            return Err(Untranslatable::new(format!(
                "a system block of type {:?}",
                b.kind
            )));
        }
        if b.cache_control.is_some() {
            notes.add(Note::CacheControlDropped);
        }
        texts.push(b.text.as_deref().unwrap_or(""));
    }
    Ok(match texts.as_slice() {
        [one] => Cow::Borrowed(*one),
        many => Cow::Owned(many.join("\n\n")),
    })
}

/// Sampling parameters for an OpenAI model: reasoning models take none.
fn sampling(req: &messages::Request, model: &str, notes: &mut Notes) -> (Option<f64>, Option<f64>) {
    if req.top_k.is_some() {
        notes.add(Note::TopKDropped);
    }
    if is_reasoning_model(model) {
        if req.temperature.is_some() || req.top_p.is_some() {
            notes.add(Note::SamplingDropped);
        }
        return (None, None);
    }
    (req.temperature, req.top_p)
}

/// Request members of Messages that OpenAI has no place for.
fn check_messages_extras(req: &messages::Request, notes: &mut Notes) -> Result<(), Untranslatable> {
    if req.mcp_servers.is_some() {
        return Err(Untranslatable::new(
            "mcp_servers (Anthropic's MCP connector)",
        ));
    }
    if req.container.is_some() {
        return Err(Untranslatable::new(
            "container (Anthropic's code execution)",
        ));
    }
    if req.service_tier.is_some() {
        notes.add(Note::ServiceTierDropped);
    }
    if req.context_management.is_some() {
        notes.add(Note::ContextManagementDropped);
    }
    Ok(())
}

/// A client tool of a Messages request; a server tool cannot leave
/// Anthropic.
fn client_tool<'a>(
    t: &'a messages::Tool<'a>,
    max_name: usize,
    notes: &mut Notes,
) -> Result<&'a serde_json::value::RawValue, Untranslatable> {
    if let Some(kind) = t.kind.as_deref().filter(|k| *k != "custom") {
        return Err(Untranslatable::new(format!(
            "the server tool {:?} ({kind}) runs only at Anthropic",
            t.name
        )));
    }
    if t.name.len() > max_name {
        return Err(Untranslatable::new(format!(
            "tool name {:?} is longer than the target's {max_name} characters",
            t.name
        )));
    }
    if t.cache_control.is_some() {
        notes.add(Note::CacheControlDropped);
    }
    Ok(t.input_schema.as_deref().unwrap_or(empty_schema()))
}

fn empty_schema() -> &'static serde_json::value::RawValue {
    static EMPTY: once_cell::sync::Lazy<Box<serde_json::value::RawValue>> =
        once_cell::sync::Lazy::new(|| {
            serde_json::value::RawValue::from_string(r#"{"type":"object","properties":{}}"#.into())
                .unwrap_or_else(|_| unreachable!())
        });
    &EMPTY
}

/// A tool_use's input as OpenAI's `arguments` string.
fn arguments<'a>(b: &'a messages::Block<'a>) -> &'a str {
    b.input.as_deref().map_or("{}", |r| r.get())
}

/// The text of a tool result (its text blocks joined), and its images.
struct ToolResult<'a> {
    texts: Vec<&'a str>,
    images: Vec<&'a messages::Block<'a>>,
}

fn tool_result<'a>(
    b: &'a messages::Block<'a>,
    notes: &mut Notes,
) -> Result<ToolResult<'a>, Untranslatable> {
    if b.is_error == Some(true) {
        notes.add(Note::ToolErrorFlagDropped);
    }
    if b.cache_control.is_some() {
        notes.add(Note::CacheControlDropped);
    }
    let mut r = ToolResult {
        texts: Vec::new(),
        images: Vec::new(),
    };
    match &b.content {
        None => {}
        Some(StrOr::Str(s)) => r.texts.push(s),
        Some(StrOr::Other(blocks)) => {
            for c in blocks {
                match c.kind.as_ref() {
                    "text" => r.texts.push(c.text.as_deref().unwrap_or("")),
                    "image" => r.images.push(c),
                    other => {
                        return Err(Untranslatable::new(format!(
                            "a tool result holding a {other:?} block"
                        )))
                    }
                }
            }
        }
    }
    Ok(r)
}

/// An image or PDF block's source as a URL.
fn source_url<'a>(b: &'a messages::Block<'a>) -> Result<super::json::Url<'a>, Untranslatable> {
    use super::json::Url;
    let src = b
        .source
        .as_ref()
        .ok_or_else(|| Untranslatable::new(format!("a {} block without a source", b.kind)))?;
    match (src.kind.as_ref(), &src.url, &src.media_type, &src.data) {
        ("url", Some(u), _, _) => Ok(Url::Plain(u)),
        ("base64", _, Some(m), Some(d)) => Ok(Url::Data { media: m, data: d }),
        (kind, ..) => Err(Untranslatable::new(format!(
            "a {} source of type {kind:?}",
            b.kind
        ))),
    }
}

/// Checks every block kind a Messages turn may hold that has no OpenAI
/// counterpart; returns whether the block is to be skipped with a note.
fn skip_block(b: &messages::Block, notes: &mut Notes) -> Result<bool, Untranslatable> {
    if b.cache_control.is_some() {
        notes.add(Note::CacheControlDropped);
    }
    if b.citations.is_some() {
        notes.add(Note::CitationsDropped);
    }
    match b.kind.as_ref() {
        "thinking" | "redacted_thinking" => {
            notes.add(Note::ThinkingHistoryDropped);
            Ok(true)
        }
        "text" | "image" | "document" | "tool_use" | "tool_result" => Ok(false),
        other => Err(Untranslatable::new(format!(
            "a content block of type {other:?}"
        ))),
    }
}
