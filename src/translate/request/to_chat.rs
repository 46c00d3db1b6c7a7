//! Anthropic Messages → OpenAI Chat Completions.

use super::super::chat::{
    ContentOut, FileOut, FunctionDefOut, FunctionOut, ImageUrlOut, MessageOut, NamedOut, PartOut,
    RequestOut, StreamOptionsOut, ToolCallOut, ToolChoiceOut, ToolOut,
};
use super::super::json::{StrOr, Url};
use super::super::messages::{Block, Message, Request};
use super::super::{Note, Notes, Untranslatable};
use super::*;

/// Chat takes at most this many stop sequences.
const MAX_STOP: usize = 4;
/// OpenAI function names are at most this long.
const MAX_TOOL_NAME: usize = 64;

pub fn translate<'a>(
    req: &'a Request<'a>,
    model: &'a str,
    notes: &mut Notes,
) -> Result<RequestOut<'a>, Untranslatable> {
    check_messages_extras(req, notes)?;
    let mut msgs = Vec::with_capacity(req.messages.len() + 1);
    if let Some(sys) = &req.system {
        let text = system_text(sys, notes)?;
        if !text.is_empty() {
            msgs.push(MessageOut {
                role: "system",
                content: Some(ContentOut::Text(text)),
                tool_calls: Vec::new(),
                tool_call_id: None,
            });
        }
    }
    for m in &req.messages {
        match m.role.as_ref() {
            "user" => user(m, &mut msgs, notes)?,
            "assistant" => assistant(m, &mut msgs, notes)?,
            // Mid-conversation system text (Claude Code sends it after the
            // last user turn): Chat takes system messages anywhere.
            "system" => {
                let text = system_text(&m.content, notes)?;
                if !text.is_empty() {
                    msgs.push(message("system", Some(ContentOut::Text(text))));
                }
            }
            other => return Err(Untranslatable::new(format!("a message of role {other:?}"))),
        }
    }
    let stop = match req.stop_sequences.as_deref() {
        None | Some([]) => None,
        Some(s) if s.len() > MAX_STOP => {
            return Err(Untranslatable::new(format!(
                "{} stop sequences; Chat Completions takes at most {MAX_STOP}",
                s.len()
            )))
        }
        Some(s) => Some(s.iter().map(|s| s.as_ref()).collect()),
    };
    let (temperature, top_p) = sampling(req, model, notes);
    let mut tools = Vec::new();
    for t in req.tools.iter().flatten() {
        let parameters = client_tool(t, MAX_TOOL_NAME, notes)?;
        tools.push(ToolOut {
            kind: "function",
            function: FunctionDefOut {
                name: &t.name,
                description: t.description.as_deref(),
                parameters,
            },
        });
    }
    let (tool_choice, parallel_tool_calls) = match (&req.tool_choice, tools.is_empty()) {
        (Some(c), false) => {
            let choice = match c.kind.as_ref() {
                "auto" => ToolChoiceOut::Mode("auto"),
                "any" => ToolChoiceOut::Mode("required"),
                "none" => ToolChoiceOut::Mode("none"),
                "tool" => ToolChoiceOut::Function {
                    kind: "function",
                    function: NamedOut {
                        name: c.name.as_deref().unwrap_or(""),
                    },
                },
                other => return Err(Untranslatable::new(format!("tool_choice {other:?}"))),
            };
            let parallel = (c.disable_parallel_tool_use == Some(true)).then_some(false);
            (Some(choice), parallel)
        }
        _ => (None, None),
    };
    let stream = req.stream == Some(true);
    Ok(RequestOut {
        model,
        messages: msgs,
        max_completion_tokens: req.max_tokens,
        temperature,
        top_p,
        stop,
        stream: stream.then_some(true),
        // Usage comes only in a last chunk asked for; Messages clients
        // always get usage.
        stream_options: stream.then_some(StreamOptionsOut {
            include_usage: true,
        }),
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        parallel_tool_calls,
        user: req.metadata.as_ref().and_then(|m| m.user_id.as_deref()),
        reasoning_effort: thinking_effort(req, model, notes),
    })
}

fn user<'a>(
    m: &'a Message<'a>,
    msgs: &mut Vec<MessageOut<'a>>,
    notes: &mut Notes,
) -> Result<(), Untranslatable> {
    let blocks = match &m.content {
        StrOr::Str(s) => {
            msgs.push(message("user", Some(ContentOut::Text(Cow::Borrowed(s)))));
            return Ok(());
        }
        StrOr::Other(b) => b,
    };
    let mut parts = Vec::new();
    // Chat's tool messages take text only: a result's images follow in the
    // user message after them, where the model still sees them.
    let mut moved = Vec::new();
    for b in blocks {
        if skip_block(b, notes)? {
            continue;
        }
        match b.kind.as_ref() {
            "text" => parts.push(PartOut::Text {
                text: b.text.as_deref().unwrap_or(""),
            }),
            "image" => parts.push(PartOut::ImageUrl {
                image_url: ImageUrlOut {
                    url: source_url(b)?,
                },
            }),
            "document" => parts.push(document(b)?),
            "tool_result" => {
                let r = tool_result(b, notes)?;
                if !r.images.is_empty() {
                    notes.add(Note::ToolResultImagesMoved);
                    moved.extend(r.images);
                }
                let content = match r.texts.as_slice() {
                    [] => ContentOut::Text(Cow::Borrowed("")),
                    [one] => ContentOut::Text(Cow::Borrowed(*one)),
                    many => {
                        ContentOut::Parts(many.iter().map(|t| PartOut::Text { text: t }).collect())
                    }
                };
                let mut msg = message("tool", Some(content));
                msg.tool_call_id = Some(b.tool_use_id.as_deref().unwrap_or(""));
                msgs.push(msg);
            }
            other => {
                return Err(Untranslatable::new(format!(
                    "a user block of type {other:?}"
                )))
            }
        }
    }
    for img in moved {
        parts.push(PartOut::ImageUrl {
            image_url: ImageUrlOut {
                url: source_url(img)?,
            },
        });
    }
    if parts.is_empty() {
        return Ok(());
    }
    let content = match parts.as_slice() {
        [PartOut::Text { text }] => ContentOut::Text(Cow::Borrowed(*text)),
        _ => ContentOut::Parts(parts),
    };
    msgs.push(message("user", Some(content)));
    Ok(())
}

fn document<'a>(b: &'a Block<'a>) -> Result<PartOut<'a>, Untranslatable> {
    let src = b.source.as_ref();
    if let Some(s) = src.filter(|s| s.kind == "text") {
        return Ok(PartOut::Text {
            text: s.data.as_deref().unwrap_or(""),
        });
    }
    match source_url(b)? {
        url @ Url::Data { .. } => Ok(PartOut::File {
            file: FileOut {
                filename: b.title.as_deref().unwrap_or("document.pdf"),
                file_data: url,
            },
        }),
        Url::Plain(_) => Err(Untranslatable::new(
            "a document by URL (Chat Completions takes files inline only)",
        )),
    }
}

fn assistant<'a>(
    m: &'a Message<'a>,
    msgs: &mut Vec<MessageOut<'a>>,
    notes: &mut Notes,
) -> Result<(), Untranslatable> {
    let blocks = match &m.content {
        StrOr::Str(s) => {
            msgs.push(message(
                "assistant",
                Some(ContentOut::Text(Cow::Borrowed(s))),
            ));
            return Ok(());
        }
        StrOr::Other(b) => b,
    };
    let mut texts: Vec<&str> = Vec::new();
    let mut calls = Vec::new();
    for b in blocks {
        if skip_block(b, notes)? {
            continue;
        }
        match b.kind.as_ref() {
            "text" => texts.push(b.text.as_deref().unwrap_or("")),
            "tool_use" => calls.push(ToolCallOut {
                index: None,
                id: Some(b.id.as_deref().unwrap_or("")),
                kind: Some("function"),
                function: FunctionOut {
                    name: Some(b.name.as_deref().unwrap_or("")),
                    arguments: arguments(b),
                },
            }),
            other => {
                return Err(Untranslatable::new(format!(
                    "an assistant block of type {other:?}"
                )))
            }
        }
    }
    // Adjacent text blocks are one stretch of output (citations split it).
    let text = match texts.as_slice() {
        [] => None,
        [one] => Some(Cow::Borrowed(*one)),
        many => Some(Cow::Owned(many.concat())),
    };
    if text.is_none() && calls.is_empty() {
        notes.add(Note::EmptyMessageDropped);
        return Ok(());
    }
    let mut msg = message("assistant", text.map(ContentOut::Text));
    msg.tool_calls = calls;
    msgs.push(msg);
    Ok(())
}

fn message<'a>(role: &'static str, content: Option<ContentOut<'a>>) -> MessageOut<'a> {
    MessageOut {
        role,
        content,
        tool_calls: Vec::new(),
        tool_call_id: None,
    }
}
