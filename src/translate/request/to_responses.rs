//! Anthropic Messages → OpenAI Responses (stateless: `store: false`, the
//! whole conversation as input items).

use super::super::json::{StrOr, Url};
use super::super::messages::{Block, Message, Request};
use super::super::responses::{
    ItemOut, OutputOut, PartOut, ReasoningOut, RequestOut, ToolChoiceOut, ToolOut,
};
use super::super::{Note, Notes, Untranslatable};
use super::*;

/// OpenAI function names are at most this long.
const MAX_TOOL_NAME: usize = 64;

pub fn translate<'a>(
    req: &'a Request<'a>,
    model: &'a str,
    notes: &mut Notes,
) -> Result<RequestOut<'a>, Untranslatable> {
    check_messages_extras(req, notes)?;
    if req.stop_sequences.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(Untranslatable::new(
            "stop_sequences (the Responses API has no stop sequences)",
        ));
    }
    let instructions = match &req.system {
        Some(sys) => Some(system_text(sys, notes)?).filter(|t| !t.is_empty()),
        None => None,
    };
    let mut input = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        match m.role.as_ref() {
            "user" => user(m, &mut input, notes)?,
            "assistant" => assistant(m, &mut input, notes)?,
            // Mid-conversation system text (Claude Code sends it after the
            // last user turn): a system message item in its place.
            "system" => system(m, &mut input, notes)?,
            other => return Err(Untranslatable::new(format!("a message of role {other:?}"))),
        }
    }
    let (temperature, top_p) = sampling(req, model, notes);
    let mut tools = Vec::new();
    for t in req.tools.iter().flatten() {
        let parameters = client_tool(t, MAX_TOOL_NAME, notes)?;
        tools.push(ToolOut {
            kind: "function",
            name: &t.name,
            description: t.description.as_deref(),
            parameters,
            strict: false,
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
                    name: c.name.as_deref().unwrap_or(""),
                },
                other => return Err(Untranslatable::new(format!("tool_choice {other:?}"))),
            };
            let parallel = (c.disable_parallel_tool_use == Some(true)).then_some(false);
            (Some(choice), parallel)
        }
        _ => (None, None),
    };
    Ok(RequestOut {
        model,
        instructions,
        input,
        max_output_tokens: req.max_tokens,
        temperature,
        top_p,
        stream: (req.stream == Some(true)).then_some(true),
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        parallel_tool_calls,
        user: req.metadata.as_ref().and_then(|m| m.user_id.as_deref()),
        reasoning: thinking_effort(req, model, notes).map(|effort| ReasoningOut { effort }),
        store: false,
    })
}

fn system<'a>(
    m: &'a Message<'a>,
    input: &mut Vec<ItemOut<'a>>,
    notes: &mut Notes,
) -> Result<(), Untranslatable> {
    let text = system_text(&m.content, notes)?;
    if text.is_empty() {
        return Ok(());
    }
    let content = match &m.content {
        StrOr::Str(s) => vec![PartOut::InputText { text: s }],
        StrOr::Other(blocks) => blocks
            .iter()
            .map(|b| PartOut::InputText {
                text: b.text.as_deref().unwrap_or(""),
            })
            .collect(),
    };
    input.push(ItemOut::Message {
        role: "system",
        content,
    });
    Ok(())
}

fn user<'a>(
    m: &'a Message<'a>,
    input: &mut Vec<ItemOut<'a>>,
    notes: &mut Notes,
) -> Result<(), Untranslatable> {
    let blocks = match &m.content {
        StrOr::Str(s) => {
            input.push(ItemOut::Message {
                role: "user",
                content: vec![PartOut::InputText { text: s }],
            });
            return Ok(());
        }
        StrOr::Other(b) => b,
    };
    let mut parts = Vec::new();
    for b in blocks {
        if skip_block(b, notes)? {
            continue;
        }
        match b.kind.as_ref() {
            "text" => parts.push(PartOut::InputText {
                text: b.text.as_deref().unwrap_or(""),
            }),
            "image" => parts.push(PartOut::InputImage {
                image_url: source_url(b)?,
            }),
            "document" => parts.push(document(b)?),
            "tool_result" => {
                let r = tool_result(b, notes)?;
                let output = if r.images.is_empty() {
                    OutputOut::Text(match r.texts.as_slice() {
                        [] => Cow::Borrowed(""),
                        [one] => Cow::Borrowed(*one),
                        many => Cow::Owned(many.join("\n")),
                    })
                } else {
                    let mut out: Vec<PartOut> = r
                        .texts
                        .iter()
                        .map(|t| PartOut::InputText { text: t })
                        .collect();
                    for img in r.images {
                        out.push(PartOut::InputImage {
                            image_url: source_url(img)?,
                        });
                    }
                    OutputOut::Parts(out)
                };
                input.push(ItemOut::FunctionCallOutput {
                    kind: "function_call_output",
                    call_id: b.tool_use_id.as_deref().unwrap_or(""),
                    output,
                });
            }
            other => {
                return Err(Untranslatable::new(format!(
                    "a user block of type {other:?}"
                )))
            }
        }
    }
    if !parts.is_empty() {
        input.push(ItemOut::Message {
            role: "user",
            content: parts,
        });
    }
    Ok(())
}

fn document<'a>(b: &'a Block<'a>) -> Result<PartOut<'a>, Untranslatable> {
    if let Some(s) = b.source.as_ref().filter(|s| s.kind == "text") {
        return Ok(PartOut::InputText {
            text: s.data.as_deref().unwrap_or(""),
        });
    }
    match source_url(b)? {
        url @ Url::Data { .. } => Ok(PartOut::InputFile {
            filename: b.title.as_deref().unwrap_or("document.pdf"),
            file_data: url,
        }),
        Url::Plain(_) => Err(Untranslatable::new("a document by URL")),
    }
}

fn assistant<'a>(
    m: &'a Message<'a>,
    input: &mut Vec<ItemOut<'a>>,
    notes: &mut Notes,
) -> Result<(), Untranslatable> {
    let blocks = match &m.content {
        StrOr::Str(s) => {
            input.push(ItemOut::Message {
                role: "assistant",
                content: vec![PartOut::OutputText { text: s }],
            });
            return Ok(());
        }
        StrOr::Other(b) => b,
    };
    // Text and calls stay in their order: a message item for each stretch
    // of text, a function_call item for each call.
    let mut text = Vec::new();
    let mut any = false;
    for b in blocks {
        if skip_block(b, notes)? {
            continue;
        }
        match b.kind.as_ref() {
            "text" => text.push(PartOut::OutputText {
                text: b.text.as_deref().unwrap_or(""),
            }),
            "tool_use" => {
                if !text.is_empty() {
                    input.push(ItemOut::Message {
                        role: "assistant",
                        content: std::mem::take(&mut text),
                    });
                }
                input.push(ItemOut::FunctionCall {
                    kind: "function_call",
                    call_id: b.id.as_deref().unwrap_or(""),
                    name: b.name.as_deref().unwrap_or(""),
                    arguments: Cow::Borrowed(arguments(b)),
                });
            }
            other => {
                return Err(Untranslatable::new(format!(
                    "an assistant block of type {other:?}"
                )))
            }
        }
        any = true;
    }
    if !text.is_empty() {
        input.push(ItemOut::Message {
            role: "assistant",
            content: text,
        });
    }
    if !any {
        notes.add(Note::EmptyMessageDropped);
    }
    Ok(())
}
