//! Non-streaming answers: a provider's 2xx JSON body read into a neutral
//! reply, and written in the client's dialect.

use super::reply::{self, StopReason};
use super::{chat, messages, responses, Note, Notes, ReplyContext};
use crate::config::Api;
use crate::record::Usage;
use bytes::Bytes;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// A translated answer, and what it said about itself.
#[derive(Debug, Clone)]
pub struct TranslatedReply {
    pub body: Bytes,
    pub usage: Usage,
    pub model: String,
    pub stop: StopReason,
    pub notes: Notes,
}

/// A 2xx body that is not an answer of its dialect (class `server`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the provider's answer cannot be read: {0}")]
pub struct InvalidReply(pub String);

pub(crate) enum Part<'a> {
    Text(Cow<'a, str>),
    Tool {
        id: Cow<'a, str>,
        name: Cow<'a, str>,
        /// JSON text of the arguments object.
        args: Cow<'a, str>,
    },
}

pub(crate) struct Reply<'a> {
    id: Cow<'a, str>,
    model: Cow<'a, str>,
    parts: Vec<Part<'a>>,
    stop: StopReason,
    usage: Usage,
}

/// Translate a provider's JSON answer into the client's dialect.
pub fn translate_response(
    upstream: Api,
    client: Api,
    body: &[u8],
    ctx: &ReplyContext,
) -> Result<TranslatedReply, InvalidReply> {
    let mut notes = Notes::default();
    let bad = |e: serde_json::Error| InvalidReply(e.to_string());
    let reply = match upstream {
        Api::Anthropic => from_messages(serde_json::from_slice(body).map_err(bad)?, &mut notes),
        Api::OpenAi => from_chat(serde_json::from_slice(body).map_err(bad)?, &mut notes)?,
        Api::OpenAiResponses => {
            from_responses(serde_json::from_slice(body).map_err(bad)?, &mut notes)?
        }
    };
    let out = match client {
        Api::Anthropic => to_messages(&reply)?,
        _ => to_chat(&reply, ctx),
    };
    Ok(TranslatedReply {
        body: Bytes::from(out),
        usage: reply.usage,
        model: reply.model.into_owned(),
        stop: reply.stop,
        notes,
    })
}

fn from_messages<'a>(r: messages::Response<'a>, notes: &mut Notes) -> Reply<'a> {
    let mut parts = Vec::with_capacity(r.content.len());
    for b in r.content {
        match b.kind.as_ref() {
            "text" => parts.push(Part::Text(b.text.unwrap_or_default())),
            "tool_use" => parts.push(Part::Tool {
                id: b.id.unwrap_or_default(),
                name: b.name.unwrap_or_default(),
                args: match b.input {
                    Some(Cow::Borrowed(r)) => Cow::Borrowed(r.get()),
                    Some(Cow::Owned(r)) => Cow::Owned(r.get().to_owned()),
                    None => Cow::Borrowed("{}"),
                },
            }),
            "thinking" | "redacted_thinking" => notes.add(Note::ThinkingOutputDropped),
            _ => notes.add(Note::UnknownBlockDropped),
        }
    }
    Reply {
        id: r.id,
        model: r.model,
        parts,
        stop: r
            .stop_reason
            .as_deref()
            .map_or(StopReason::EndTurn, StopReason::from_anthropic),
        usage: reply::from_anthropic(&r.usage),
    }
}

fn from_chat<'a>(r: chat::Completion<'a>, notes: &mut Notes) -> Result<Reply<'a>, InvalidReply> {
    if let Some(e) = r.error {
        return Err(InvalidReply(format!(
            "an error in a 2xx answer: {}",
            e.message
        )));
    }
    let mut choices = r.choices.into_iter();
    let choice = choices
        .next()
        .ok_or_else(|| InvalidReply("a completion without choices".into()))?;
    let mut stop = choice
        .finish_reason
        .as_deref()
        .map_or(StopReason::EndTurn, StopReason::from_chat);
    let mut parts = Vec::new();
    if let Some(m) = choice.message {
        if m.reasoning_content.is_some() || m.reasoning.is_some() {
            notes.add(Note::ThinkingOutputDropped);
        }
        if let Some(t) = m.content.filter(|t| !t.is_empty()) {
            parts.push(Part::Text(t));
        }
        if let Some(t) = m.refusal.filter(|t| !t.is_empty()) {
            parts.push(Part::Text(t));
            stop = StopReason::Refusal;
        }
        for c in m.tool_calls.into_iter().flatten() {
            let f = c.function.unwrap_or_default();
            parts.push(Part::Tool {
                id: c.id.unwrap_or_default(),
                name: f.name.unwrap_or_default(),
                args: f.arguments.unwrap_or_default(),
            });
        }
    }
    Ok(Reply {
        id: r.id,
        model: r.model,
        parts,
        stop,
        usage: r.usage.as_ref().map(reply::from_chat).unwrap_or_default(),
    })
}

fn from_responses<'a>(
    r: responses::Response<'a>,
    notes: &mut Notes,
) -> Result<Reply<'a>, InvalidReply> {
    if r.status.as_deref() == Some("failed") {
        let msg = r.error.map(|e| e.message).unwrap_or_default();
        return Err(InvalidReply(format!("the response failed: {msg}")));
    }
    let mut parts = Vec::new();
    let mut called = false;
    let mut refused = false;
    for item in r.output {
        match item.kind.as_ref() {
            "message" => {
                for p in item.content {
                    match p.kind.as_ref() {
                        "output_text" => parts.push(Part::Text(p.text.unwrap_or_default())),
                        "refusal" => {
                            refused = true;
                            parts.push(Part::Text(p.refusal.unwrap_or_default()));
                        }
                        _ => notes.add(Note::UnknownBlockDropped),
                    }
                }
            }
            "function_call" => {
                called = true;
                parts.push(Part::Tool {
                    id: item.call_id.unwrap_or_default(),
                    name: item.name.unwrap_or_default(),
                    args: item.arguments.unwrap_or_default(),
                });
            }
            "reasoning" => notes.add(Note::ThinkingOutputDropped),
            _ => notes.add(Note::UnknownBlockDropped),
        }
    }
    let incomplete = r
        .incomplete_details
        .as_ref()
        .and_then(|d| d.reason.as_deref());
    let mut stop = StopReason::from_responses(incomplete, called);
    if refused && stop == StopReason::EndTurn {
        stop = StopReason::Refusal;
    }
    Ok(Reply {
        id: r.id,
        model: r.model,
        parts,
        stop,
        usage: r
            .usage
            .as_ref()
            .map(reply::from_responses)
            .unwrap_or_default(),
    })
}

/// Arguments as the JSON object Anthropic's `input` is.
pub(crate) fn input_of(args: &str) -> Result<&RawValue, InvalidReply> {
    let t = args.trim();
    if t.is_empty() {
        return serde_json::from_str("{}").map_err(|e| InvalidReply(e.to_string()));
    }
    if !t.starts_with('{') {
        return Err(InvalidReply(
            "tool call arguments are not a JSON object".into(),
        ));
    }
    serde_json::from_str(t)
        .map_err(|_| InvalidReply("tool call arguments are not valid JSON".into()))
}

fn to_messages(r: &Reply) -> Result<Vec<u8>, InvalidReply> {
    let mut content = Vec::with_capacity(r.parts.len());
    for p in &r.parts {
        content.push(match p {
            Part::Text(t) => messages::BlockOut::Text { text: t },
            Part::Tool { id, name, args } => messages::BlockOut::ToolUse {
                id,
                name,
                input: input_of(args)?,
            },
        });
    }
    let out = messages::ResponseOut {
        id: &r.id,
        kind: "message",
        role: "assistant",
        model: &r.model,
        content,
        stop_reason: Some(r.stop.anthropic()),
        stop_sequence: None,
        usage: reply::anthropic(&r.usage),
    };
    serde_json::to_vec(&out).map_err(|e| InvalidReply(e.to_string()))
}

fn to_chat(r: &Reply, ctx: &ReplyContext) -> Vec<u8> {
    let mut texts: Vec<&str> = Vec::new();
    let mut calls = Vec::new();
    for p in &r.parts {
        match p {
            Part::Text(t) => texts.push(t),
            Part::Tool { id, name, args } => calls.push(chat::ToolCallOut {
                index: None,
                id: Some(id),
                kind: Some("function"),
                function: chat::FunctionOut {
                    name: Some(name),
                    arguments: args,
                },
            }),
        }
    }
    let content = match texts.as_slice() {
        [] => None,
        [one] => Some(Cow::Borrowed(*one)),
        many => Some(Cow::Owned(many.concat())),
    };
    let out = chat::CompletionOut {
        id: &r.id,
        object: "chat.completion",
        created: ctx.created,
        model: &r.model,
        choices: &[chat::ChoiceOut {
            index: 0,
            message: Some(chat::AssistantOut {
                role: "assistant",
                content,
                refusal: None,
                tool_calls: calls,
            }),
            delta: None,
            logprobs: None,
            finish_reason: Some(r.stop.chat()),
        }],
        usage: Some(reply::chat(&r.usage)),
    };
    serde_json::to_vec(&out).unwrap_or_default()
}
